"""Presets: load offline, match their cards, refuse tampered weights, fine-tune better than scratch."""

import json
import shutil

import numpy as np
import pytest

import zoo
from recipes.engine.run import run_recipe
from zoo import presets
from zoo.errors import ZooError

PRESETS = sorted(zoo.list_presets())
FAMILIES = {"dense_ae", "conv_ae", "lstm_ae", "transformer_ae", "vae"}


def test_every_family_and_the_vae_variants_ship_a_preset_within_the_size_budget():
    models = {presets.preset_info(name)["model"] for name in PRESETS}
    assert FAMILIES <= models
    assert {"vae_conv_fashion_mnist", "vae_conv_2d_fashion_mnist", "conv_ae_denoise_fashion_mnist",
            "conv_ae_inpaint_fashion_mnist"} <= set(PRESETS)
    total = sum(p.stat().st_size for p in presets.PRESETS_DIR.iterdir())
    assert total < 30e6, f"presets take {total / 1e6:.1f} MB"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_offline_and_matches_its_card(name):
    info = presets.preset_info(name)
    model = zoo.from_preset(name)
    assert model.registry_name == info["model"] and model.count_params() == info["parameters"]
    stored = info["check"]["reconstruction_mse"]
    assert presets.check_reconstruction(model, info["dataset"]) == pytest.approx(stored, rel=0.02)
    card = (presets.PRESETS_DIR / f"{name}.md").read_text()
    assert info["command"] in card and info["sha256"] in card and f"{stored:.6f}" in card


@pytest.fixture
def copied_preset(tmp_path, monkeypatch):
    """A private copy of the preset folder, so the test can damage a weights file."""
    folder = tmp_path / "presets"
    shutil.copytree(presets.PRESETS_DIR, folder)
    monkeypatch.setattr(presets, "PRESETS_DIR", folder)
    return folder


def test_tampered_or_truncated_weights_are_refused(copied_preset):
    weights = copied_preset / "conv_ae_fashion_mnist.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ZooError, match="does not match its sha256") as error:
        zoo.from_preset("conv_ae_fashion_mnist")
    assert "\n" not in str(error.value)
    weights.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ZooError, match="tampered or truncated"):
        zoo.from_preset("conv_ae_fashion_mnist")
    weights.unlink()
    with pytest.raises(ZooError, match="missing"):
        zoo.from_preset("conv_ae_fashion_mnist")


def test_unknown_preset_and_architecture_changing_overrides():
    with pytest.raises(ZooError, match="unknown preset"):
        zoo.from_preset("resnet_imagenet")
    with pytest.raises(ZooError, match="change the architecture"):
        zoo.from_preset("conv_ae_fashion_mnist", hidden_units=32)


def test_a_preset_fine_tunes_with_plain_keras_fit(mnist):
    import keras

    model = zoo.from_preset("conv_ae_fashion_mnist", dtype="mixed_bfloat16")
    model.compile(keras.optimizers.Adam(1e-3), loss=zoo.losses.bce)
    x = mnist.x_train[:256]
    before = model.evaluate(x, x, verbose=0)
    model.fit(x, x, epochs=2, batch_size=32, verbose=0)
    assert model.evaluate(x, x, verbose=0) < before


def test_a_batch_norm_preset_fine_tunes_with_plain_keras_fit_once_its_statistics_are_frozen(mnist):
    import keras

    from zoo.layers import batch_norm_layers

    x, held_out = mnist.x_train[:256], mnist.x_test[:256]
    after = {}
    for frozen in (False, True):
        model = zoo.from_preset("conv_ae_inpaint_fashion_mnist")
        moving_means = [norm.moving_mean.numpy() for norm in batch_norm_layers(model)]
        if frozen:
            assert zoo.freeze_batch_norm(model) == len(moving_means) > 0
        model.compile(keras.optimizers.Adam(1e-3), loss=zoo.losses.bce)
        before = model.evaluate(held_out, held_out, verbose=0)
        keras.utils.set_random_seed(0)
        model.fit(x, x, epochs=2, batch_size=32, verbose=0)
        after[frozen] = model.evaluate(held_out, held_out, verbose=0)
        kept = [np.array_equal(norm.moving_mean.numpy(), mean) for norm, mean in zip(batch_norm_layers(model), moving_means)]
        assert all(kept) if frozen else not any(kept)
    # Trained, the layers' lagging statistics undo much of the fine-tuning (docs/presets.md).
    assert after[True] < before and after[True] < after[False]


def test_finetuning_on_mnist_beats_the_same_network_from_scratch(tmp_path):
    _, metrics = run_recipe("finetune", quick=True, from_preset="conv_ae_fashion_mnist", out=tmp_path / "ft", verbose=0)
    mse = metrics["metrics"]["reconstruction MSE"]
    assert mse["fine-tuned preset"] < mse["from scratch"]
    assert mse["fine-tuned preset"] < mse["preset as is"]
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["config"]["model"]["name"] == "conv_ae"


def test_classify_starts_from_a_preset(tmp_path):
    _, metrics = run_recipe("classify", quick=True, from_preset="conv_ae_fashion_mnist", out=tmp_path / "c",
                            sets=["params.label_fractions=[0.1]", "params.label_draws=1"], verbose=0)
    accuracy = metrics["metrics"]["accuracy, 10% labels"]
    # 400 labelled digits (10 classes: chance is 0.1), one draw; the encoder was pretrained on clothes
    assert accuracy["autoencoder"] > 0.7 and accuracy["from scratch"] > 0.5
    assert not (tmp_path / "c" / "pretrain").exists(), "a preset needs no pretraining"


def test_export_accepts_a_preset_name(tmp_path, capsys):
    from recipes.cli import main

    assert main(["export", "dense_ae_fashion_mnist", "--out", str(tmp_path / "e"), "--quantize", "float32",
                 "--calibration-data", "mnist5k"]) == 0
    metadata = json.loads((tmp_path / "e" / "metadata.json").read_text())
    assert metadata["model"]["name"] == "dense_ae"
    check = metadata["files"]["model_float32.tflite"]["verification"]
    assert check["max_abs_diff"]["reconstruct"] <= 1e-4


def test_lstm_preset_int8_file_keeps_the_keras_quality_at_a_third_of_the_size(tmp_path):
    # All-int8 LSTM cells scored 12.8 dB against the preset's 20.1 (export.convert.RECURRENT_FLOAT_OPS);
    # issue 12 asks every family's int8 file to be at most 0.35x its float32 file.
    from export import export_model

    report = export_model(zoo.from_preset("lstm_ae_fashion_mnist"), tmp_path / "lstm", quantize="float32,int8",
                          calibration_data="fashion_mnist", verify_samples=32)
    checks = {c.mode: c for c in report.checks}
    assert checks["int8"].met and checks["int8"].psnr_db > checks["int8"].keras_psnr_db - 1, str(report)
    assert checks["int8"].size_bytes <= 0.35 * checks["float32"].size_bytes, str(report)


def test_denoise_preset_onnx_files_meet_their_targets_on_codes_beyond_one(tmp_path):
    # Its spatial codes reach ~30: float32 rounding there is ~30 times that of a [0, 1] image, and a
    # fixed 1e-5 failed the encode file at 3e-5, a millionth of the codes' range.
    from export import export_model

    report = export_model(zoo.from_preset("conv_ae_denoise_fashion_mnist"), tmp_path / "onnx", quantize="float32",
                          calibration_data="fashion_mnist", verify_samples=32, onnx=True)
    check = next(c for c in report.checks if c.mode == "onnx")
    assert check.output_peak["encode"] > 1 >= check.output_peak["reconstruct"], str(report)
    assert check.limit("reconstruct") == 1e-5 and check.limit("encode") == 1e-5 * check.output_peak["encode"]
    assert check.met and not report.missed, str(report)
    entry = json.loads((tmp_path / "onnx" / "metadata.json").read_text())["files"]["onnx/encode.onnx"]
    assert entry["verification"]["met"] and entry["verification"]["max_abs_diff"] <= check.limit("encode")


def test_every_card_command_is_the_one_presets_build_runs():
    import shlex

    from recipes.tools import build_presets as builds

    assert set(builds.PRESETS) == set(PRESETS)
    for name in PRESETS:
        assert presets.preset_info(name)["command"] == "aezoo " + shlex.join(builds.command_for(name)), name


def test_a_preset_build_refuses_a_run_folder_of_another_command(tmp_path):
    from recipes.tools import build_presets as builds

    out = tmp_path / "conv_ae_fashion_mnist"
    out.mkdir()
    # the folder of an earlier registry command: finished, so the build would ship its model as is
    older = "aezoo run reduce --model conv_ae --epochs 3 --out " + str(out)
    (out / "config.json").write_text(json.dumps({"recipe": "reduce", "command": older, "config": {}}))
    (out / "metrics.json").write_text("{}")
    with pytest.raises(ZooError, match="holds a run of another command") as error:
        builds.run_or_resume(builds.command_for("conv_ae_fashion_mnist", out=out))
    assert "\n" not in str(error.value) and older in str(error.value)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json"]
