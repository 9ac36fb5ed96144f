"""The autoencoder types over the zoo's backbones (vq_vae, cvae, aae, wae, masked_ae, the VAE's bounds) and the
plain autoencoders' sparsity and contractive penalties: train, shapes, save/load, config, errors.

The gradient, tf.data and TFLite checks use TensorFlow; the rest runs on JAX too (tests/test_jax_backend.py runs it there)."""

import keras
import numpy as np
import pytest

import zoo
from zoo.vae import gaussian_log_density

SHAPE = (8, 8, 1)
# (registry name, options) on the 8 x 8 digits: tiny networks keep each case a few seconds.
CASES = [
    ("vq_vae", {"backbone": "conv", "backbone_config": {"filters": [8, 16]}, "codebook_size": 16, "code_dim": 4}),
    ("vq_vae", {"backbone": "dense", "latent_dim": 16, "codebook_size": 16, "code_dim": 4, "codebook_update": "ema",
                "restart_unused_codes": True}),
    ("vq_vae", {"backbone": "lstm", "latent_dim": 16, "codebook_size": 8, "code_dim": 8, "backbone_config": {"units": [24]}}),
    ("cvae", {"backbone": "dense", "latent_dim": 2, "num_classes": 10}),
    ("cvae", {"backbone": "conv", "latent_dim": 2, "num_classes": 10, "backbone_config": {"filters": [8], "hidden_units": 32}}),
    ("aae", {"backbone": "dense", "latent_dim": 2}),
    ("aae", {"backbone": "transformer", "latent_dim": 4,
             "backbone_config": {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32, "patch_size": 4}}),
    ("wae", {"backbone": "dense", "latent_dim": 2}),
    ("masked_ae", {"backbone": "transformer", "latent_dim": 4,
                   "backbone_config": {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32, "patch_size": 2}}),
    ("vae", {"backbone": "dense", "latent_dim": 2, "bound": "iwae", "samples": 4}),
    ("vae", {"backbone": "dense", "latent_dim": 2, "tc_weight": 2.0}),
]
VARIANTS = {"restart_unused_codes": "ema-restart", "bound": "iwae", "tc_weight": "tc"}
IDS = ["-".join([name, options["backbone"], *(v for k, v in VARIANTS.items() if k in options)]) for name, options in CASES]
WAE, MASKED, IWAE, TCVAE = range(7, 11)


def data(digits, name, n=256):
    """(x, y) for fit: labels for the cvae, None for the others; the LSTM reads rows as steps."""
    x = digits.x_train[:n]
    return x, digits.y_train[:n] if name == "cvae" else None


def build(name, options, shape=SHAPE, **kwargs):
    keras.utils.set_random_seed(0)
    if options.get("backbone") == "lstm":
        shape = shape[:2]
    model = zoo.create(name, input_shape=shape, seed=0, **options, **kwargs)
    model.compile(keras.optimizers.Adam(3e-3))
    return model


def reconstruct(model, x, y):
    return model((x, y)) if y is not None else model(x)


def test_every_type_is_registered():
    assert {"vq_vae", "cvae", "aae", "wae", "masked_ae"} <= set(zoo.list_models())


# The fast tier trains each type once; the vq_vae on the LSTM and the aae on the Transformer in the full suite.
FULL_SUITE_ONLY = ("vq_vae-lstm", "aae-transformer")


@pytest.mark.parametrize("name,options", [
    pytest.param(*case, id=case_id, marks=pytest.mark.slow if case_id in FULL_SUITE_ONLY else ())
    for case, case_id in zip(CASES, IDS)])
def test_type_trains_saves_and_reloads_exactly(name, options, digits, tmp_path):
    x, y = data(digits, name)
    if options["backbone"] == "lstm":
        x = x[..., 0]
    model = build(name, options)
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False).history
    assert all(np.isfinite(values).all() for values in history.values()), history
    error = history.get("reconstruction_loss", history["loss"])  # the masked_ae logs its (masked) error as loss
    assert error[-1] < error[0], error
    if name == "vq_vae":
        assert history["perplexity"][-1] > 1 and 0 < history["codebook_usage"][-1] <= 1
    assert reconstruct(model, x[:4], None if y is None else y[:4]).shape == x[:4].shape

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is type(model)
    y16 = None if y is None else y[:16]
    np.testing.assert_allclose(reconstruct(reloaded, x[:16], y16), reconstruct(model, x[:16], y16), atol=1e-6, rtol=0)
    weights = tmp_path / "model.weights.h5"
    model.save_weights(weights)
    clone = type(model).from_config(model.get_config())
    clone.load_weights(weights)
    np.testing.assert_allclose(reconstruct(clone, x[:16], y16), reconstruct(model, x[:16], y16), atol=1e-6, rtol=0)
    assert clone.get_config() == model.get_config()


def test_vq_vae_codes_are_int_indices_on_the_conv_grid_and_decode_back(digits):
    model = build(*CASES[0])
    x = digits.x_train[:8]
    indices = model.encode(x)
    assert indices.dtype == "int32" and indices.shape == (8, 2, 2)  # filters [8, 16]: 8 x 8 -> 2 x 2 grid
    assert 0 <= int(np.min(indices)) and int(np.max(indices)) < 16
    np.testing.assert_allclose(model.decode(indices), model(x), atol=1e-6)
    quantized = model.quantizer.lookup(indices)
    np.testing.assert_allclose(model.decode_vectors(quantized), model(x), atol=1e-6)
    # each vector's index is its nearest entry
    vectors = np.asarray(model.encode_vectors(x)).reshape(-1, 4)
    distances = ((vectors[:, None] - model.quantizer.codebook.numpy()[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(indices).reshape(-1), distances.argmin(1))


def test_vq_vae_straight_through_gradient_reaches_the_encoder(digits):
    import tensorflow as tf

    model = build(*CASES[0])
    x = digits.x_train[:16]
    with tf.GradientTape() as tape:
        loss = model.step_losses((x,), training=True)[1]  # reconstruction only
    kernel = model.backbone.code_head.weights[0]
    gradient = tape.gradient(loss, kernel)
    assert gradient is not None and float(tf.reduce_max(tf.abs(gradient))) > 0


def test_vq_vae_ema_moves_entries_without_gradients_and_restarts_unused_ones(digits):
    model = build(*CASES[1])
    assert all(w is not model.quantizer.codebook for w in model.trainable_weights)
    before = model.quantizer.codebook.numpy().copy()
    model.fit(digits.x_train[:64], batch_size=32, epochs=1, verbose=0)
    after = model.quantizer.codebook.numpy()
    # the first step finds every entry unused and restarts it on an encoder vector of that batch
    assert not np.allclose(before, after)
    vectors = np.asarray(model.encode_vectors(digits.x_train[:64])).reshape(-1, 4)
    assert np.abs(after).max() <= np.abs(vectors).max() * 2


def test_cvae_decodes_and_samples_the_given_classes(digits):
    model = build(*CASES[3])
    x, y = digits.x_train[:6], digits.y_train[:6]
    assert model.encode(x, y).shape == (6, 2) and model.encode(x, y).dtype == "float32"
    z = np.zeros((3, 2), "float32")
    assert model.decode(z, [0, 1, 2]).shape == (3, *SHAPE)
    assert not np.allclose(model.decode(z, [0, 0, 0]), model.decode(z, [1, 1, 1]))  # the label reaches the decoder
    np.testing.assert_allclose(model.decode(z, [3, 3, 3]), model.decode(z, np.eye(10)[[3, 3, 3]]), atol=1e-6)
    samples = model.sample(4, labels=7, seed=1)
    assert samples.shape == (4, *SHAPE)
    np.testing.assert_array_equal(samples, model.sample(4, labels=7, seed=1))


def test_aae_samples_from_the_prior_and_its_discriminator_learns(digits):
    model = build(*CASES[5])
    history = model.fit(digits.x_train[:256], batch_size=32, epochs=3, verbose=0).history
    assert history["discriminator_loss"][-1] < history["discriminator_loss"][0]
    samples = model.sample(5, seed=0)
    assert samples.shape == (5, *SHAPE) and 0 <= float(np.min(samples)) and float(np.max(samples)) <= 1
    np.testing.assert_array_equal(samples, model.sample(5, seed=0))


@pytest.mark.parametrize("name,options", [CASES[i] for i in (0, 3, 5, WAE, MASKED, IWAE)],
                         ids=["vq_vae", "cvae", "aae", "wae", "masked_ae", "vae-iwae"])
def test_mixed_precision_step_is_finite_with_float32_outputs(name, options, digits):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build(name, options)
        x, y = data(digits, name, 64)
        history = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.isfinite(history["loss"]).all()
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert reconstruct(model, x[:4], None if y is None else y[:4]).dtype == "float32"


def test_cvae_without_labels_or_with_labels_outside_the_classes_is_refused(digits):
    import tensorflow as tf

    model = build(*CASES[3])
    x = digits.x_train[:32]
    with pytest.raises(zoo.ZooError, match=r"the cvae needs class labels"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(zoo.ZooError, match=r"the cvae needs class labels"):
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=1, verbose=0)
    with pytest.raises(zoo.ZooError, match=r"the cvae needs class labels"):
        model.sample(3)
    with pytest.raises(zoo.ZooError, match=r"labels must be class ids in \[0, 10\), got values from 0 to 12"):
        model.fit(x, np.arange(32) % 13, epochs=1, verbose=0)
    with pytest.raises(zoo.ZooError, match=r"got values from -1 to -1"):
        model.sample(2, labels=-1)


@pytest.mark.parametrize("name,options,message", [
    ("vq_vae", {"codebook_size": 1}, "codebook_size must be a whole number >= 2, got 1"),
    ("vq_vae", {"codebook_update": "kmeans"}, "unknown vq_vae codebook_update 'kmeans'"),
    ("vq_vae", {"backbone": "dense", "latent_dim": 18, "code_dim": 4}, "latent_dim=18 must be a multiple of code_dim=4"),
    ("vq_vae", {"latent_dim": 12, "code_dim": 4, "backbone_config": {"filters": [8, 16]}}, "latent_dim must be 2x2x4 = 16"),
    ("vq_vae", {"beta": 2.0}, "vq_vae has no option 'beta'"),
    ("cvae", {"codebook_size": 8}, "cvae has no option 'codebook_size'"),
    ("cvae", {"num_classes": 1}, "num_classes must be a whole number >= 2"),
    ("cvae", {"backbone_config": {"code": "spatial"}}, "drop code='spatial'"),
    ("aae", {"num_classes": 10}, "aae has no option 'num_classes'"),
    ("aae", {"backbone": "dense", "backbone_config": {"filters": [8]}}, "dense_ae has no option 'filters'"),
    ("aae", {"backbone": "gru"}, "unknown aae backbone 'gru'"),
    ("aae", {"reconstruction_loss": "psnr"}, "unknown aae reconstruction loss 'psnr'"),
    ("aae", {"backbone_config": {"sparsity": "l1"}}, "sparsity apply to the plain autoencoders"),
    ("vae", {"bound": "iwae", "samples": 0}, "samples must be a whole number >= 1, got 0"),
    ("vae", {"samples": 5}, "samples=5 needs bound='iwae'"),
    ("vae", {"bound": "iwae", "tc_weight": 1.0}, "free_bits and tc_weight apply to bound='elbo'"),
    ("vae", {"bound": "renyi"}, "unknown VAE bound 'renyi'"),
    ("vae", {"tc_weight": -1}, "tc_weight must be >= 0, got -1"),
    ("vae", {"backbone_config": {"contractive_weight": 0.1}}, "contractive_weight apply to the plain autoencoders"),
    ("wae", {"mask_ratio": 0.5}, "wae has no option 'mask_ratio'"),
    ("wae", {"mmd_weight": -1}, "mmd_weight must be >= 0, got -1"),
    ("masked_ae", {"mask_ratio": 1.0}, "mask_ratio must lie strictly between 0 and 1"),
    ("masked_ae", {"mask_ratio": 0}, "mask_ratio must lie strictly between 0 and 1"),
    ("masked_ae", {"backbone": "conv"}, "unknown masked_ae backbone 'conv'"),
    ("masked_ae", {"mmd_weight": 1.0}, "masked_ae has no option 'mmd_weight'"),
    ("dense_ae", {"sparsity": "l2"}, "unknown sparsity 'l2'"),
    ("conv_ae", {"sparsity": "kl", "sparsity_target": 1.5}, "sparsity_target must lie in (0, 1), got 1.5"),
    ("lstm_ae", {"input_shape": (8, 8), "contractive_weight": -1}, "contractive_weight must be >= 0"),
    ("dense_ae", {"bound": "iwae"}, "dense_ae has no option 'bound'"),
])
def test_bad_options_are_refused_in_one_line(name, options, message):
    options = {"input_shape": SHAPE, **options}
    with pytest.raises(zoo.ZooError) as error:
        zoo.create(name, **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_vq_vae_refuses_float_or_misshapen_indices():
    model = build(*CASES[0])
    with pytest.raises(zoo.ZooError, match=r"decodes int indices of shape \(batch, 2, 2\), got float32"):
        model.decode(np.zeros((1, 2, 2), "float32"))
    with pytest.raises(zoo.ZooError, match=r"indices must lie in \[0, 16\), got 0 to 16"):
        model.decode(np.array([[[0, 16], [1, 2]]]))


def tflite_ops(function, *specs):
    import tensorflow as tf

    from export.builder.convert import check_builtin_only, op_names

    concrete = tf.function(function).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    check_builtin_only(content, "float32")
    return op_names(content)


def test_vq_vae_inference_converts_to_builtin_tflite_ops_argmin_and_gather():
    import tensorflow as tf

    model = build(*CASES[0])
    encode_ops = tflite_ops(model.encode, tf.TensorSpec((1, *SHAPE), tf.float32))
    decode_ops = tflite_ops(model.decode, tf.TensorSpec((1, 2, 2), tf.int32))
    assert "ARG_MIN" in encode_ops and "GATHER" in decode_ops


@pytest.mark.parametrize("name,options", [CASES[3], CASES[5]], ids=["cvae", "aae"])
def test_cvae_and_aae_decoders_convert_to_builtin_tflite_ops(name, options):
    import tensorflow as tf

    model = build(name, options)
    latent = model.latent_dim
    if name == "cvae":
        decoder_ops = tflite_ops(lambda z, y: model.decode(z, y), tf.TensorSpec((1, latent), tf.float32),
                                 tf.TensorSpec((1, 10), tf.float32))
    else:
        decoder_ops = tflite_ops(model.decode, tf.TensorSpec((1, latent), tf.float32))
    assert "FULLY_CONNECTED" in decoder_ops


def test_wae_and_masked_ae_inference_converts_to_builtin_tflite_ops():
    import tensorflow as tf

    wae, masked = build(*CASES[WAE]), build(*CASES[MASKED])
    assert "FULLY_CONNECTED" in tflite_ops(wae.decode, tf.TensorSpec((1, 2), tf.float32))
    assert "FULLY_CONNECTED" in tflite_ops(wae.encode, tf.TensorSpec((1, *SHAPE), tf.float32))
    assert "BATCH_MATMUL" in tflite_ops(masked.encode, tf.TensorSpec((1, *SHAPE), tf.float32))


# --- the VAE's bounds ------------------------------------------------------------------------
def test_iwae_bound_with_one_sample_is_the_elbo_and_more_samples_tighten_it(digits):
    model = build(*CASES[IWAE])
    model.fit(digits.x_train[:256], batch_size=32, epochs=2, verbose=0)
    x = digits.x_train[:128]
    eps = np.random.default_rng(0).standard_normal((1, 128, 2)).astype("float32")
    bound, reconstruction, kl = (v.numpy() for v in model.importance_weighted_bound(x, x, eps))
    # k = 1: log p(x | z) - (log q(z | x) - log p(z)) at z = mu + sigma * eps, the one-sample ELBO
    z_mean, z_log_var = (v.numpy() for v in model.encode_distribution(x))
    z = z_mean + np.exp(0.5 * z_log_var) * eps[0]
    log_ratio = np.sum(gaussian_log_density(z, z_mean, z_log_var) - gaussian_log_density(z, 0.0, 0.0), axis=-1)
    elbo_reconstruction, analytic_kl = (v.numpy() for v in model.elbo_terms(x, x, eps[0]))
    np.testing.assert_allclose(bound, -elbo_reconstruction - log_ratio, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(kl, analytic_kl, rtol=1e-6)
    # its expectation is the ELBO with the analytic KL: log_ratio averages to the KL over draws
    draws = np.random.default_rng(1).standard_normal((4000, 128, 2)).astype("float32")
    z_draws = z_mean + np.exp(0.5 * z_log_var) * draws
    mean_ratio = np.sum(gaussian_log_density(z_draws, z_mean, z_log_var) - gaussian_log_density(z_draws, 0.0, 0.0), -1).mean(0)
    assert float(np.mean(mean_ratio)) == pytest.approx(float(np.mean(analytic_kl)), abs=0.01)
    loss = lambda eps: -float(np.mean(model.importance_weighted_bound(x, x, eps)[0]))
    elbo_loss = np.mean([loss(draws[i : i + 1]) for i in range(50)])  # k = 1 over the same 50 draws
    assert loss(draws[:50]) < elbo_loss - 0.01, (loss(draws[:50]), elbo_loss)  # on the same weights


def test_tc_vae_adds_the_weighted_total_correlation_to_the_elbo(digits):
    model = build(*CASES[TCVAE])
    history = model.fit(digits.x_train[:128], batch_size=32, epochs=2, verbose=0).history
    assert np.isfinite(history["tc_loss"]).all()
    results = model.evaluate(digits.x_test[:64], batch_size=64, verbose=0, return_dict=True)
    assert results["loss"] == pytest.approx(results["reconstruction_loss"] + results["kl_loss"] + 2.0 * results["tc_loss"], rel=1e-4)


# --- wae ---------------------------------------------------------------------------------------
def test_wae_mmd_is_near_zero_between_prior_draws_and_grows_with_a_shift(digits):
    model = build(*CASES[WAE])
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((512, 2)).astype("float32") for _ in range(2))
    same, shifted = float(model.mmd(a, b)), float(model.mmd(a + 1.0, b))
    assert abs(same) < 5e-3 and shifted > 10 * abs(same) and shifted > 0.02, (same, shifted)
    samples = model.sample(5, seed=0)
    assert samples.shape == (5, *SHAPE)
    np.testing.assert_array_equal(samples, model.sample(5, seed=0))


# --- masked_ae -----------------------------------------------------------------------------------
def test_masked_ae_hides_the_ratio_of_patches_and_scores_only_them(digits):
    model = build(*CASES[MASKED])  # 8 x 8 images, 2 x 2 patches: 16 patches, 12 hidden
    mask = model.random_mask(4).numpy()
    assert mask.shape == (4, 8, 8, 1) and model.masked_patches == 12
    np.testing.assert_array_equal(mask.reshape(4, 4, 2, 4, 2).mean((2, 4)).sum((1, 2)), [12] * 4)  # whole patches
    assert not np.array_equal(mask[0], mask[1])  # a fresh mask per example
    x = digits.x_train[:4]
    changed = np.where(mask == 1, x, 1.0 - x)  # other targets where the patches are visible
    np.testing.assert_allclose(model.masked_loss(x, changed, mask), model.masked_loss(x, x, mask), rtol=1e-6)
    changed = np.where(mask == 0, x, 1.0 - x)
    assert float(model.masked_loss(x, changed, mask)) != pytest.approx(float(model.masked_loss(x, x, mask)))
    # inference reads the whole image
    np.testing.assert_allclose(model.encode(x), model.backbone.encode(x), atol=1e-6)
    assert not np.allclose(model.encode(x), model.backbone.encode(x * (1 - mask)))


# --- sparse and contractive plain autoencoders ----------------------------------------------------
PENALTY_CASES = [
    ("dense_ae", {"latent_dim": 4, "hidden_units": [16], "sparsity": "l1", "sparsity_weight": 0.05}),
    ("conv_ae", {"latent_dim": 4, "filters": [8], "sparsity": "kl", "sparsity_target": 0.1, "sparsity_weight": 0.5}),
    ("lstm_ae", {"latent_dim": 4, "units": [16], "contractive_weight": 0.1}),
    ("transformer_ae", {"latent_dim": 4, "embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32, "patch_size": 4,
                        "sparsity": "l1", "contractive_weight": 0.1}),
]


def plain(name, options):
    keras.utils.set_random_seed(0)
    model = zoo.create(name, input_shape=SHAPE[:2] if name == "lstm_ae" else SHAPE, **options)
    model.compile(keras.optimizers.Adam(3e-3), loss=zoo.losses.bce)
    return model


# The fast tier trains the dense and conv cases; the LSTM's and the Transformer's contractive Jacobians take longer.
@pytest.mark.parametrize("name,options", [
    pytest.param(name, options, id=name, marks=pytest.mark.slow if options.get("contractive_weight") else ())
    for name, options in PENALTY_CASES])
def test_plain_autoencoder_penalties_train_and_survive_save_and_load(name, options, digits, tmp_path):
    x = digits.x_train[:128, ..., 0] if name == "lstm_ae" else digits.x_train[:128]
    model = plain(name, options)
    history = model.fit(x, x, batch_size=32, epochs=3, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0], history["loss"]
    # the reported loss is the compiled loss plus the penalty
    penalty = float(model.code_penalty(x[:64]))
    assert penalty > 0
    evaluated = model.evaluate(x[:64], x[:64], batch_size=64, verbose=0)
    assert evaluated == pytest.approx(float(np.mean(zoo.losses.bce(x[:64], model(x[:64])))) + penalty, rel=1e-4)

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.get_config() == model.get_config() and reloaded.sparsity == options.get("sparsity")
    np.testing.assert_allclose(reloaded(x[:16]), model(x[:16]), atol=1e-6, rtol=0)
    assert float(reloaded.code_penalty(x[:64])) == pytest.approx(penalty, rel=1e-5)
    assert reloaded.evaluate(x[:64], x[:64], batch_size=64, verbose=0) == pytest.approx(evaluated, rel=1e-5)
    model.save_weights(tmp_path / "model.weights.h5")
    clone = type(model).from_config(model.get_config())
    clone.load_weights(tmp_path / "model.weights.h5")
    assert float(clone.code_penalty(x[:64])) == pytest.approx(penalty, rel=1e-5)


def test_contractive_penalty_is_the_squared_frobenius_norm_of_the_encoder_jacobian(digits):
    model = plain("dense_ae", {"latent_dim": 4, "hidden_units": [16], "contractive_weight": 1.0})
    x = digits.x_train[:8]
    hidden, code = model.encoder_trunk.get_layer("hidden_0"), model.code_head
    w1, b1, wc = hidden.kernel.numpy(), hidden.bias.numpy(), code.kernel.numpy()
    # code = Wc^T relu(W1^T x + b1) + bc, so d code / d x = Wc^T diag(1[a > 0]) W1^T for each example
    active = (x.reshape(8, -1) @ w1 + b1) > 0
    jacobians = np.einsum("hm,bh,ih->bmi", wc, active.astype("float32"), w1)
    expected = np.mean(np.sum(jacobians**2, axis=(1, 2)))
    _, penalty = model.contractive_penalty(x)
    assert float(penalty) == pytest.approx(expected, rel=1e-4)
    assert float(model.code_penalty(x)) == pytest.approx(expected, rel=1e-4)


def test_sparsity_penalties_match_their_formulas(digits):
    x = digits.x_train[:32]
    l1 = plain("dense_ae", {"latent_dim": 4, "hidden_units": [16], "sparsity": "l1", "sparsity_weight": 0.5})
    codes = np.asarray(l1.encode(x))
    assert float(l1.code_penalty(x)) == pytest.approx(0.5 * np.abs(codes).sum(1).mean(), rel=1e-5)
    kl = plain("dense_ae", {"latent_dim": 4, "hidden_units": [16], "sparsity": "kl", "sparsity_target": 0.1, "sparsity_weight": 2.0})
    rho = (1 / (1 + np.exp(-np.asarray(kl.encode(x))))).mean(0)
    expected = np.sum(0.1 * np.log(0.1 / rho) + 0.9 * np.log(0.9 / (1 - rho)))
    assert float(kl.code_penalty(x)) == pytest.approx(2.0 * expected, rel=1e-4)
