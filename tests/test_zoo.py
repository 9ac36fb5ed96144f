"""Every registered model and every VAE backbone: build, train, save/load, config, precision.

The gradient checks use TensorFlow; the rest runs on JAX too (tests/test_jax_backend.py runs it there)."""

import keras
import numpy as np
import pytest

import zoo
from zoo.vae import reparameterize

# (registry name, input kind, small options): small widths keep the suite fast; the defaults
# are exercised by `aezoo list` and the recipes.
CASES = [
    ("dense_ae", "image", {"hidden_units": [128, 48]}),
    ("conv_ae", "image", {"filters": [8, 16], "hidden_units": 64}),
    ("lstm_ae", "sequence", {"units": [32]}),
    ("transformer_ae", "image", {"embed_dim": 32, "num_heads": 2, "num_layers": 1, "ff_dim": 64, "patch_size": 7}),
    ("transformer_ae", "sequence", {"embed_dim": 32, "num_heads": 2, "num_layers": 1, "ff_dim": 64}),
    ("vae", "image", {"backbone": "dense", "backbone_config": {"hidden_units": [128]}}),
    ("vae", "image", {"backbone": "conv", "backbone_config": {"filters": [8, 16], "hidden_units": 64}}),
    ("vae", "sequence", {"backbone": "lstm", "backbone_config": {"units": [32]}}),
    ("vae", "image", {"backbone": "transformer", "backbone_config": {"embed_dim": 32, "num_heads": 2, "num_layers": 1, "patch_size": 7}}),
    ("conv_ae", "image", {"filters": [8, 16], "hidden_units": 64, "normalization": "group", "activation": "silu",
                          "blocks_per_stage": 1, "upsampling": "resize"}),
    ("vae", "image", {"backbone": "conv", "backbone_config": {"filters": [8, 16], "hidden_units": 64,
                                                              "normalization": "batch", "blocks_per_stage": [1, 0]}}),
    ("dense_ae", "image", {"hidden_units": [64], "blocks_per_stage": 1}),
    ("lstm_ae", "sequence", {"units": [16], "bidirectional": True}),
    # Four stages take 28 x 28 to a 2 x 2 grid, so the spatial code of LATENT = 8 has 2 channels.
    ("conv_ae", "image", {"filters": [8, 8, 16, 16], "code": "spatial", "normalization": "batch"}),
    ("vae", "image", {"backbone": "conv", "backbone_config": {"filters": [8, 8, 16, 16], "code": "spatial"}}),
    # Five stages end at 1 x 1; the code sits on stage 3's 2 x 2 grid, with stage 4's context added.
    ("conv_ae", "image", {"filters": [8, 8, 8, 16, 16], "code": "spatial", "code_stage": 3, "normalization": "batch",
                          "blocks_per_stage": 1, "upsampling": "resize"}),
]
IDS = [
    f"{name}-{kind}-{options.get('backbone', '')}".rstrip("-")
    + ("-residual" if "blocks_per_stage" in str(options) else "")
    + ("-bidirectional" if "bidirectional" in options else "")
    + ("-spatial" if "spatial" in str(options) else "")
    + ("-finer-code" if "code_stage" in options else "")
    for name, kind, options in CASES
]
LATENT = 8
# The fast tier (-m "not slow") trains each family and VAE backbone once (the Transformer on images);
# the Transformer on sequences, the option variants (residual, bidirectional, spatial codes) and the
# mixed-precision runs beyond the dense, conv and LSTM float16 steps and the conv VAE's two precisions
# train in the full suite.
BASE_CASES = 9
TRANSFORMER_SEQUENCE = 4


def harness_params(precision=None):
    """CASES (with `precision`) as pytest params, the ones beyond the fast tier's marked slow."""
    def in_fast_tier(index):
        if precision is None:
            return index < BASE_CASES and index != TRANSFORMER_SEQUENCE
        return (index < 3 and precision == "mixed_float16") or index == 6

    return [pytest.param(*case, *([precision] if precision else []), id=f"{case_id}{'-' + precision if precision else ''}",
                         marks=() if in_fast_tier(index) else pytest.mark.slow)
            for index, (case, case_id) in enumerate(zip(CASES, IDS))]


def inputs(mnist, kind, n=256):
    x = mnist.x_train[:n]
    return x[..., 0] if kind == "sequence" else x


def build(name, kind, options):
    keras.utils.set_random_seed(0)
    shape = (28, 28) if kind == "sequence" else (28, 28, 1)
    return zoo.create(name, input_shape=shape, latent_dim=LATENT, **options)


def compiled(model, learning_rate=3e-3):
    optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, loss=None if isinstance(model, zoo.VAE) else zoo.losses.bce)
    return model


def fit(model, x, epochs, **kwargs):
    targets = None if isinstance(model, zoo.VAE) else x
    return model.fit(x, targets, batch_size=32, epochs=epochs, verbose=0, shuffle=False, **kwargs).history


@pytest.mark.parametrize("name,kind,options", harness_params())
def test_model_trains_saves_and_reloads_exactly(name, kind, options, mnist, tmp_path):
    x = inputs(mnist, kind)
    model = compiled(build(name, kind, options))
    assert model.built and model.weights, "weights must exist before any call (exact save/load)"
    assert model(x[:4]).shape == x[:4].shape
    assert model.encode(x[:4]).shape == (4, LATENT)
    assert model.decode(np.zeros((3, LATENT), "float32")).shape == (3, *x.shape[1:])

    history = fit(model, x, epochs=3)
    assert history["loss"][-1] < history["loss"][0], history["loss"]

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is type(model)
    np.testing.assert_allclose(reloaded(x[:16]), model(x[:16]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(reloaded.encode(x[:16]), model.encode(x[:16]), atol=1e-6, rtol=0)

    config = model.get_config()
    assert config["input_shape"] == list(x.shape[1:]) and config["latent_dim"] == LATENT
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


@pytest.mark.parametrize("name,kind,options,precision",
                         [*harness_params("mixed_float16"), *harness_params("mixed_bfloat16")])
def test_mixed_precision_step_is_finite_with_float32_weights_and_outputs(name, kind, options, precision, mnist):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        model = compiled(build(name, kind, options))
        history = fit(model, inputs(mnist, kind, 64), epochs=1)
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.isfinite(history["loss"]).all()
    assert model.dtype_policy.name == precision
    assert all(w.dtype == "float32" for w in model.weights)
    x = inputs(mnist, kind, 4)
    assert model(x).dtype == "float32" and model.encode(x).dtype == "float32"
    if precision == "mixed_float16":  # the loss is scaled so small float16 gradients survive
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    if isinstance(model, zoo.VAE):
        z_mean, z_log_var = model.encode_distribution(x)
        assert z_mean.dtype == "float32" and z_log_var.dtype == "float32"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function tracing")
@pytest.mark.parametrize("name, options", [("conv_ae", {"filters": [8, 16], "hidden_units": 64}),
                                           ("vae", {"backbone": "dense", "backbone_config": {"hidden_units": [32]}})])
def test_compile_builds_the_optimizer_so_the_first_fit_traces_its_step_once(name, options, mnist, tmp_path):
    model = compiled(build(name, "image", options))
    assert model.optimizer.built  # its slots exist before any step
    traces, step = [], model.train_step
    model.train_step = lambda *data: traces.append(1) or step(*data)  # Python runs once per tf.function trace
    fit(model, inputs(mnist, "image", 64), epochs=1)
    assert len(traces) == 1
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")  # compiled from its config, state restored
    assert reloaded.optimizer.built and reloaded.optimizer.iterations.numpy() == model.optimizer.iterations.numpy() == 2
    for saved, loaded in zip(model.optimizer.variables, reloaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(saved))


def test_kl_divergence_matches_numpy_reference():
    rng = np.random.default_rng(0)
    mu, log_var = rng.normal(size=(5, 7)).astype("float32"), rng.normal(size=(5, 7)).astype("float32")
    expected = 0.5 * np.sum(np.exp(log_var) + mu**2 - 1 - log_var, axis=-1)
    np.testing.assert_allclose(zoo.losses.kl_divergence(mu, log_var), expected, rtol=1e-5)
    assert np.allclose(zoo.losses.kl_divergence(np.zeros((2, 3)), np.zeros((2, 3))), 0.0)


def test_bce_and_mse_match_numpy_per_example():
    rng = np.random.default_rng(1)
    y, p = rng.random((4, 6, 6, 1)).astype("float32"), rng.uniform(0.05, 0.95, (4, 6, 6, 1)).astype("float32")
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).reshape(4, -1)
    np.testing.assert_allclose(zoo.losses.bce(y, p), bce.mean(1), rtol=1e-4)
    np.testing.assert_allclose(zoo.losses.bce(y, p, reduce="sum"), bce.sum(1), rtol=1e-4)
    logits = np.log(p / (1 - p))
    np.testing.assert_allclose(zoo.losses.bce(y, logits, from_logits=True), bce.mean(1), rtol=1e-4)
    np.testing.assert_allclose(zoo.losses.mse(y, p), ((y - p) ** 2).reshape(4, -1).mean(1), rtol=1e-5)


def test_psnr_loss_is_minus_each_images_psnr_and_weights_its_error_by_the_inverse_mse():
    rng = np.random.default_rng(2)
    y = rng.random((2, 6, 6, 1)).astype("float32")
    p = np.clip(y + np.stack([np.full((6, 6, 1), 0.01), np.full((6, 6, 1), 0.2)]), 0, 1).astype("float32")
    error = ((y - p) ** 2).reshape(2, -1).mean(1)
    np.testing.assert_allclose(zoo.losses.negative_psnr(y, p), 10 * np.log10(error + 1e-6), rtol=1e-5)
    import tensorflow as tf

    p = tf.Variable(p)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(zoo.losses.negative_psnr(y, p))
    gradient = tape.gradient(loss, p).numpy().reshape(2, -1)
    # d(-PSNR)/dp = (10 / ln 10) * 2 (p - y) / (pixels * MSE): per unit of error, the well-restored
    # image's pixels count MSE_bad / MSE_good times as much (MSE would count them alike).
    per_unit_error = gradient / (p.numpy() - y).reshape(2, -1)
    np.testing.assert_allclose(per_unit_error[0] / per_unit_error[1], (error[1] + 1e-6) / (error[0] + 1e-6), rtol=1e-3)


def test_bce_on_a_saturated_sigmoid_output_still_has_gradient(mnist):
    """The model's sigmoid output carries its logits, so BCE does not clip them to a zero gradient."""
    model = build("dense_ae", "image", CASES[0][2])
    bias = model.decoder_net.get_layer("logits").bias
    bias.assign(np.full(bias.shape, 30.0, "float32"))  # sigmoid(30) == 1.0 in float32
    x = mnist.x_train[:8]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(zoo.losses.bce(x, model(x)))
    gradient = tape.gradient(loss, bias)
    assert np.isfinite(loss) and float(tf.reduce_max(tf.abs(gradient))) > 1e-3


def test_gradients_reach_mean_and_log_variance_through_the_sample(mnist):
    model = build(*CASES[6])
    x = mnist.x_train[:16]
    eps = np.random.default_rng(0).standard_normal((16, LATENT)).astype("float32")
    import tensorflow as tf

    with tf.GradientTape() as tape:
        reconstruction, kl = model.elbo_terms(x, x, eps)
        loss = tf.reduce_mean(reconstruction)  # reconstruction only: KL alone would also reach both heads
    mean_kernel, log_var_kernel = model.backbone.code_head.kernel, model.z_log_var_head.kernel
    grads = tape.gradient(loss, [mean_kernel, log_var_kernel])
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_reparameterisation_is_mean_plus_sigma_times_noise():
    mu, log_var, eps = np.array([[1.0, -2.0]]), np.array([[0.0, np.log(4.0)]]), np.array([[0.5, 0.5]])
    np.testing.assert_allclose(reparameterize(mu, log_var, eps), [[1.5, -1.0]], rtol=1e-6)


def test_vae_logs_loss_reconstruction_and_kl_in_fit_and_evaluate(mnist):
    model = compiled(build(*CASES[6]))
    x = mnist.x_train[:128]
    history = model.fit(x, epochs=2, batch_size=32, validation_data=(mnist.x_test[:64],), verbose=0).history
    for key in ("loss", "reconstruction_loss", "kl_loss", "val_loss", "val_reconstruction_loss", "val_kl_loss"):
        assert key in history and np.isfinite(history[key]).all(), key
    # beta = 1, no warm-up: the logged loss is exactly reconstruction + KL
    np.testing.assert_allclose(history["loss"], np.add(history["reconstruction_loss"], history["kl_loss"]), rtol=1e-4)
    results = model.evaluate(mnist.x_test[:64], verbose=0, return_dict=True)
    assert set(results) == {"loss", "reconstruction_loss", "kl_loss"}


def test_vae_kl_warmup_and_beta_weight_the_kl_term(mnist):
    model = build("vae", "image", {**CASES[6][2], "beta": 4.0, "kl_warmup_steps": 10})
    assert float(model.kl_weight(0)) == pytest.approx(0.4)
    assert float(model.kl_weight(50)) == pytest.approx(4.0)


def test_vae_samples_have_the_input_shape_and_follow_the_seed():
    model = build(*CASES[6])
    samples = model.sample(5, seed=3)
    assert samples.shape == (5, 28, 28, 1)
    assert float(np.min(samples)) >= 0 and float(np.max(samples)) <= 1
    np.testing.assert_array_equal(model.sample(5, seed=3), samples)
    assert not np.allclose(model.sample(5, seed=4), samples)


def test_vae_uses_mean_code_for_reconstruction():
    model = build(*CASES[5])
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(model(x), model.decode(model.encode(x)), atol=1e-6)


@pytest.mark.parametrize("shape", [(27, 30, 1), (9, 13, 3)])
def test_conv_ae_keeps_any_image_size(shape):
    model = zoo.create("conv_ae", input_shape=shape, latent_dim=4, filters=[4, 8])
    x = np.random.default_rng(0).random((2, *shape)).astype("float32")
    assert model(x).shape == x.shape


def test_conv_ae_takes_residual_blocks_per_stage_and_refuses_a_count_per_missing_stage():
    model = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=4, filters=(8, 16), hidden_units=32,
                       blocks_per_stage=[0, 2])
    block_layers = {layer.name.rsplit("_block_", 1)[0] for network in (model.encoder_trunk, model.decoder_net)
                    for layer in network.layers if "_block_" in layer.name}
    assert block_layers == {"conv_1", "deconv_0"}  # the 7x7 stage in the encoder and, mirrored, the decoder
    assert type(model).from_config(model.get_config()).count_params() == model.count_params()
    with pytest.raises(zoo.ZooError, match=r"one per stage of filters=\[8, 16\], got \[1\]"):
        zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=4, filters=(8, 16), blocks_per_stage=[1])


@pytest.mark.parametrize("name,options,message", [
    ("conv_ae", {"filters": [32, -1]}, "filters must be a whole number >= 1 or a list of them, e.g. filters=[32, 64], got [32, -1]"),
    ("conv_ae", {"filters": []}, "filters must be a whole number >= 1 or a list of them"),
    ("conv_ae", {"filters": [32.5]}, "got [32.5]"),
    ("conv_ae", {"filters": float("inf")}, "got inf"),
    ("conv_ae", {"kernel_size": [3, 3]}, "kernel_size must be a whole number >= 1, got [3, 3]"),
    ("conv_ae", {"hidden_units": 0}, "hidden_units must be a whole number >= 1, got 0"),
    ("conv_ae", {"blocks_per_stage": -1}, "blocks_per_stage must be a whole number >= 0 or a list of them"),
    ("dense_ae", {"hidden_units": ["wide"]}, "hidden_units must be a whole number >= 1 or a list of them, e.g. hidden_units=[256, 64]"),
    ("dense_ae", {"blocks_per_stage": -1}, "blocks_per_stage must be a whole number >= 0, got -1"),
    ("lstm_ae", {"units": "64"}, "units must be a whole number >= 1 or a list of them, e.g. units=[64], got '64'"),
    ("transformer_ae", {"patch_size": 0}, "patch_size must be a whole number >= 1, got 0"),
    ("transformer_ae", {"ff_dim": -4}, "ff_dim must be a whole number >= 1, got -4"),
    ("transformer_ae", {"num_layers": 0}, "num_layers must be a whole number >= 1, got 0"),
])
def test_bad_size_options_are_refused_naming_the_option(name, options, message):
    # these used to fail inside Keras or Python (TypeError, ZeroDivisionError): a traceback in the CLI
    shape = (28, 28) if name == "lstm_ae" else (28, 28, 1)
    with pytest.raises(zoo.ZooError) as error:
        zoo.create(name, input_shape=shape, latent_dim=8, **options)
    assert message in str(error.value)


def test_a_family_given_data_of_another_rank_names_itself_and_the_families_that_fit():
    with pytest.raises(zoo.ZooError, match=r"conv_ae expects input_shape of rank 3 \(no batch axis\), got \(16, 1\); .* lstm_ae \(sequences"):
        zoo.create("conv_ae", input_shape=(16, 1), latent_dim=4)


@pytest.mark.parametrize("name,option,width", [("conv_ae", "filters", 8), ("dense_ae", "hidden_units", 64), ("lstm_ae", "units", 32)])
def test_one_width_is_a_list_of_one(name, option, width):
    shape = (28, 28) if name == "lstm_ae" else (28, 28, 1)
    one = zoo.create(name, input_shape=shape, latent_dim=8, **{option: width})
    assert one.get_config()[option] == [width]
    assert one.count_params() == zoo.create(name, input_shape=shape, latent_dim=8, **{option: [width]}).count_params()


def test_spatial_code_keeps_each_entry_local_and_refuses_a_latent_dim_off_the_grid():
    model = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=98, filters=(8, 16), code="spatial")
    assert model.get_config()["hidden_units"] is None
    assert not [layer for network in (model.encoder_trunk, model.decoder_net) for layer in network.layers
                if isinstance(layer, keras.layers.Dense)]
    # Code entries sit on the 7 x 7 grid (2 channels each): a change in the top-left 4 x 4 pixels
    # reaches the entries of the top-left cells (receptive field) but not those of the opposite corner.
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    changed = x.copy()
    changed[:, :4, :4] += 0.5
    moved = np.abs(model.encode(changed) - model.encode(x)).reshape(2, 7, 7, 2).max(axis=(0, 3))
    assert moved[0, 0] > 0 and moved[-1, -1] == 0 and moved[-1, :].max() == 0
    with pytest.raises(zoo.ZooError, match="latent_dim must be a multiple of 49, got 64; choose 49"):
        zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=64, filters=(8, 16), code="spatial")
    with pytest.raises(zoo.ZooError, match="no dense hidden layer; drop hidden_units"):
        zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=98, filters=(8, 16), code="spatial", hidden_units=128)


def test_a_code_on_a_finer_stage_keeps_its_grid_and_sees_the_deeper_stages_context():
    model = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=196, filters=(8, 16), code="spatial", code_stage=0)
    assert model.encode(np.zeros((1, 28, 28, 1), "float32")).shape == (1, 196)  # 14 x 14 x 1
    # Changed pixels in rows and columns 0-3 reach cells 0-1 of stage 0's 14 x 14 map; stage 1 (cell
    # 0 of 7), upsampled and convolved (3x3) back onto that grid, carries them to cell 2 as well.
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    changed = x.copy()
    changed[:, :4, :4] += 0.5
    moved = np.abs(model.encode(changed) - model.encode(x)).reshape(2, 14, 14).max(axis=0)
    assert moved[2, 2] > 0 and moved[3:, :].max() == 0 and moved[:, 3:].max() == 0
    with pytest.raises(zoo.ZooError, match=r"14x14 grid of stage 0, so latent_dim must be a multiple of 196, got 98"):
        zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=98, filters=(8, 16), code="spatial", code_stage=0)
    # Three stages pad 28 x 28 inputs to 32 x 32, so stage 0's grid is 16 x 16, not 14 x 14.
    with pytest.raises(zoo.ZooError, match=r"16x16 grid of stage 0, so latent_dim must be a multiple of 256, got 392; choose 256"):
        zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=392, filters=(8, 16, 16), code="spatial", code_stage=0)
    assert zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=64, filters=(8, 16, 16), code="spatial",
                      code_stage=1).encode(np.zeros((1, 28, 28, 1), "float32")).shape == (1, 64)  # 8 x 8 x 1
    with pytest.raises(zoo.ZooError, match=r"code_stage=2 names no stage of filters=\[8, 16\]; choose 0 to 1"):
        zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=98, filters=(8, 16), code="spatial", code_stage=2)
    with pytest.raises(zoo.ZooError, match="code_stage needs code='spatial'"):
        zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=16, filters=(8, 16), code_stage=0)


def test_transformer_pads_images_that_do_not_divide_into_patches():
    model = zoo.create("transformer_ae", input_shape=(10, 11, 1), latent_dim=4, embed_dim=16, num_heads=2, num_layers=1, patch_size=4)
    x = np.random.default_rng(0).random((2, 10, 11, 1)).astype("float32")
    assert model(x).shape == x.shape


def test_every_registered_model_is_listed():
    assert zoo.list_models() == ["aae", "conv_ae", "cvae", "dense_ae", "lstm_ae", "masked_ae", "transformer_ae", "vae", "vq_vae", "wae"]


def test_model_encoder_is_a_functional_model_sharing_weights(mnist):
    model = build(*CASES[1])
    x = mnist.x_train[:4]
    np.testing.assert_allclose(model.encoder(x), model.encode(x), atol=1e-6)
    assert {id(w) for w in model.encoder.weights} <= {id(w) for w in model.weights}


def test_free_bits_charge_each_latent_dimension_at_least_its_allowance_and_log_the_true_kl(digits):
    x = digits.x_test[:64]
    for free_bits in (0.0, 50.0):
        vae = zoo.create("vae", input_shape=(8, 8, 1), latent_dim=2, backbone="dense", seed=0, free_bits=free_bits)
        vae.compile(keras.optimizers.Adam(1e-3))
        logs = vae.evaluate(x, batch_size=64, verbose=0, return_dict=True)
        assert logs["kl_loss"] < 50  # an untrained encoder's true KL is far below the allowance
        charged_kl = 2 * free_bits if free_bits else logs["kl_loss"]
        assert logs["loss"] == pytest.approx(logs["reconstruction_loss"] + charged_kl, rel=1e-5)
    assert type(vae).from_config(vae.get_config()).free_bits == 50.0
