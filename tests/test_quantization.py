"""Keras-native quantization of every family and the VAE: int8 models save and load; dtype policies
and policy maps given to a constructor reach every sublayer."""

import gc

import keras
import numpy as np
import pytest

import zoo

TINY = {
    "dense_ae": ("image", {"hidden_units": [64]}),
    "conv_ae": ("image", {"filters": [8, 16], "hidden_units": 64}),
    "lstm_ae": ("sequence", {"units": [32]}),
    "transformer_ae": ("image", {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32, "patch_size": 7}),
    "vae": ("image", {"backbone": "transformer",
                      "backbone_config": {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32, "patch_size": 7}}),
    "vae-conv": ("image", {"backbone": "conv", "backbone_config": {"filters": [8, 16], "hidden_units": 64}}),
}
QUANTIZABLE = (keras.layers.Dense, keras.layers.EinsumDense)


@pytest.fixture(scope="module", autouse=True)
def earlier_objects_frozen():
    """Keras' `quantize` collects garbage after each variable it replaces (`Layer.__delattr__`), which
    walks every object the worker's earlier tests left alive (about a second each after a few test
    files); frozen (`gc.freeze`), those objects are skipped."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def build(case, **options):
    kind, family_options = TINY[case]
    keras.utils.set_random_seed(0)
    shape = (28, 28) if kind == "sequence" else (28, 28, 1)
    return zoo.create(case.split("-")[0], input_shape=shape, latent_dim=8, **family_options, **options)


def images(mnist, model):
    x = mnist.x_test[:16]
    return x[..., 0] if model.data_shape == (28, 28) else x


def quantizable_layers(model):
    return [layer for layer in model._flatten_layers() if type(layer) in QUANTIZABLE]


# The fast tier quantizes the dense, conv and LSTM networks and the conv VAE; the attention ones in the full suite.
@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.slow if TINY[case][1].get("backbone") == "transformer"
                                               or case == "transformer_ae" else ()) for case in TINY])
def test_an_int8_quantized_model_saves_and_loads_with_identical_outputs(case, mnist, tmp_path):
    model = build(case)
    x = images(mnist, model)
    float_outputs = np.asarray(model.predict_on_batch(x))
    model.quantize("int8")
    assert all(layer.quantization_mode == "int8" for layer in quantizable_layers(model))
    outputs = np.asarray(model.predict_on_batch(x))
    assert 0 < np.abs(outputs - float_outputs).max() < 0.1  # int8 weights: close, not equal

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert {layer.path for layer in quantizable_layers(loaded) if layer.quantization_mode == "int8"} == {
        layer.path for layer in quantizable_layers(model)
    }
    np.testing.assert_array_equal(np.asarray(loaded.predict_on_batch(x)), outputs)
    np.testing.assert_array_equal(np.asarray(loaded.encode(x)), np.asarray(model.encode(x)))

    model.save_weights(tmp_path / "model.weights.h5")
    rebuilt = type(model).from_config(model.get_config())
    rebuilt.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_array_equal(np.asarray(rebuilt.predict_on_batch(x)), outputs)


@pytest.mark.parametrize("case", ["dense_ae", "conv_ae", "transformer_ae", "vae"])
def test_a_dtype_policy_map_given_as_dtype_reaches_every_sublayer(case, mnist):
    """keras-hub's quantization harness: a map naming each Dense/EinsumDense path builds those layers int8."""
    paths = [layer.path for layer in quantizable_layers(build(case))]
    policy_map = keras.dtype_policies.DTypePolicyMap("float32", {path: keras.dtype_policies.get("int8_from_float32") for path in paths})
    model = build(case, dtype=policy_map)
    assert sorted(layer.path for layer in quantizable_layers(model) if layer.quantization_mode == "int8") == sorted(paths)
    x = images(mnist, model)
    outputs = np.asarray(model.predict_on_batch(x))
    assert outputs.shape == x.shape and np.isfinite(outputs).all()
    config = model.get_config()
    assert type(model).from_config(config).get_config() == config
    revived = type(model).from_config(config)
    revived.set_weights(model.get_weights())
    np.testing.assert_array_equal(np.asarray(revived.predict_on_batch(x)), outputs)


@pytest.mark.parametrize("case", TINY)
def test_a_mixed_precision_policy_reaches_the_sublayers_and_the_heads_stay_float32(case, mnist):
    model = build(case, dtype="mixed_bfloat16")
    heads = {"code", "z_log_var", "logits", "output"}
    layers = [layer for layer in model._flatten_layers(include_self=False)
              if not isinstance(layer, keras.Model) and (layer.weights or layer.name in heads)]  # not the containers
    for layer in layers:
        expected = "float32" if layer.name.split("_conv")[0] in heads else "bfloat16"
        assert layer.compute_dtype == expected, layer.path
    assert sum(layer.compute_dtype == "bfloat16" for layer in layers) >= 2
    x = images(mnist, model)
    assert keras.backend.standardize_dtype(model(x).dtype) == "float32"
    assert keras.backend.standardize_dtype(model.encode(x).dtype) == "float32"
