"""The autoencoder types over the zoo's backbones: vq_vae, cvae, aae (train, shapes, save/load, config, errors)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from export.convert import check_builtin_only, op_names

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
]
IDS = [f"{name}-{options['backbone']}" + ("-ema-restart" if "restart_unused_codes" in options else "") for name, options in CASES]


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
    assert {"vq_vae", "cvae", "aae"} <= set(zoo.list_models())


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_type_trains_saves_and_reloads_exactly(name, options, digits, tmp_path):
    x, y = data(digits, name)
    if options["backbone"] == "lstm":
        x = x[..., 0]
    model = build(name, options)
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False).history
    assert all(np.isfinite(values).all() for values in history.values()), history
    assert history["reconstruction_loss"][-1] < history["reconstruction_loss"][0], history["reconstruction_loss"]
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
    vectors = model.encode_vectors(x).numpy().reshape(-1, 4)
    distances = ((vectors[:, None] - model.quantizer.codebook.numpy()[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(indices.numpy().reshape(-1), distances.argmin(1))


def test_vq_vae_straight_through_gradient_reaches_the_encoder(digits):
    model = build(*CASES[0])
    x = digits.x_train[:16]
    with tf.GradientTape() as tape:
        loss = model._step_losses((x,), training=True)[1]  # reconstruction only
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
    vectors = model.encode_vectors(digits.x_train[:64]).numpy().reshape(-1, 4)
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


@pytest.mark.parametrize("name,options", [CASES[0], CASES[3], CASES[5]], ids=["vq_vae", "cvae", "aae"])
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
])
def test_bad_options_are_refused_in_one_line(name, options, message):
    with pytest.raises(zoo.ZooError) as error:
        zoo.create(name, input_shape=SHAPE, **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_vq_vae_refuses_float_or_misshapen_indices():
    model = build(*CASES[0])
    with pytest.raises(zoo.ZooError, match=r"decodes int indices of shape \(batch, 2, 2\), got float32"):
        model.decode(np.zeros((1, 2, 2), "float32"))
    with pytest.raises(zoo.ZooError, match=r"indices must lie in \[0, 16\), got 0 to 16"):
        model.decode(np.array([[[0, 16], [1, 2]]]))


def tflite_ops(function, *specs):
    concrete = tf.function(function).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    check_builtin_only(content, "float32")
    return op_names(content)


def test_vq_vae_inference_converts_to_builtin_tflite_ops_argmin_and_gather():
    model = build(*CASES[0])
    encode_ops = tflite_ops(model.encode, tf.TensorSpec((1, *SHAPE), tf.float32))
    decode_ops = tflite_ops(model.decode, tf.TensorSpec((1, 2, 2), tf.int32))
    assert "ARG_MIN" in encode_ops and "GATHER" in decode_ops


@pytest.mark.parametrize("name,options", [CASES[3], CASES[5]], ids=["cvae", "aae"])
def test_cvae_and_aae_decoders_convert_to_builtin_tflite_ops(name, options):
    model = build(name, options)
    latent = model.latent_dim
    if name == "cvae":
        decoder_ops = tflite_ops(lambda z, y: model.decode(z, y), tf.TensorSpec((1, latent), tf.float32),
                                 tf.TensorSpec((1, 10), tf.float32))
    else:
        decoder_ops = tflite_ops(model.decode, tf.TensorSpec((1, latent), tf.float32))
    assert "FULLY_CONNECTED" in decoder_ops
