"""The training core: exact resume after SIGKILL, tf.distribute agreement, NaN and disk-full stops."""

import dataclasses
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from recipes.engine import checkpoints, distribution, training
from recipes.engine.epoch_batches import EpochBatches, stream_batches
from recipes.engine.evaluation import psnr
from recipes.engine.training import TrainSettings
from zoo.dataset_examples import DatasetExamples
from zoo.errors import ZooError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def aezoo(*args):
    return [sys.executable, "-m", "recipes.cli", *map(str, args)]


def weights_of(path):
    return keras.models.load_model(path).get_weights()


def test_batches_are_a_pure_function_of_seed_epoch_and_step():
    x = np.arange(100, dtype="float32").reshape(100, 1)
    noisy = lambda xb, yb, rng: (xb + rng.normal(size=xb.shape).astype("float32"), yb)  # noqa: E731
    full = EpochBatches(x, None, 32, seed=7, initial_epoch=0, epochs=3, transform=noisy)
    resumed = EpochBatches(x, None, 32, seed=7, initial_epoch=2, epochs=3, transform=noisy)
    assert len(full) == 12 and len(resumed) == 4
    for step in range(4):
        np.testing.assert_array_equal(resumed[step][0], full[8 + step][0])
    assert not np.array_equal(full[0][1], full[4][1]), "each epoch has its own order"
    epoch = np.concatenate([full[i][1] for i in range(4)])
    assert sorted(epoch.ravel()) == list(range(100)), "an epoch visits every example once"


@pytest.mark.slow  # a training subprocess killed and resumed
def test_resume_after_sigkill_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    common = ["train", "dense_ae", "--data", "digits", "--epochs", 20, "--batch-size", 32, "--latent-dim", 4,
              "--precision", "float32", "--seed", 3, "--set", "hidden_units=[24]"]
    whole = subprocess.run(aezoo(*common, "--out", tmp_path / "whole"), check=True, env=ENV, cwd=REPO,
                           capture_output=True, text=True)
    # stdout is a pipe, not a terminal: one line per epoch, no progress-bar control codes
    assert "Epoch 20/20" in whole.stdout and not any(c in whole.stdout for c in "\r\x08\x1b━")

    killed = tmp_path / "killed"
    state = killed / "checkpoints" / "state.json"
    process = subprocess.Popen(aezoo(*common, "--out", killed), env=ENV, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    epochs_done = json.loads(state.read_text())["epoch"]
    assert 2 <= epochs_done < 20
    assert not (killed / "model.keras").exists()

    subprocess.run(aezoo(*common, "--out", killed, "--resume"), check=True, env=ENV, cwd=REPO, capture_output=True)
    history = (killed / "history.csv").read_text().splitlines()
    assert len(history) == 1 + json.loads(state.read_text())["epoch"]
    for resumed, whole in zip(weights_of(killed / "model.keras"), weights_of(tmp_path / "whole" / "model.keras")):
        np.testing.assert_allclose(resumed, whole, atol=1e-5, rtol=0)
    # what the run records reproduces it: the command as given, without --resume
    command = json.loads((killed / "metrics.json").read_text())["command"]
    assert command == "aezoo " + shlex.join(map(str, [*common, "--out", killed]))


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import zoo
    from recipes.engine.epoch_batches import EpochBatches
    from recipes.engine.training import TrainSettings, precise_batch_norm_sample, recompute_batch_norm_statistics, train
    from zoo.layers import batch_norm_layers
    x = zoo.data.load("mnist5k").x_train[:512]

    def recomputed(model, x):
        copy = type(model).from_config(model.get_config())
        copy.set_weights(model.get_weights())
        recompute_batch_norm_statistics(copy, precise_batch_norm_sample(EpochBatches(x, None, 64, 5, 0, 1), len(x), 64)())
        return copy

    out = {}
    for strategy in ("default", "mirrored"):
        for name, options in (("dense_ae", {"hidden_units": [64]}),
                              ("vae", {"backbone": "dense", "backbone_config": {"hidden_units": [64]}, "seed": 1}),
                              ("conv_ae", {"filters": [8], "hidden_units": 64, "normalization": "batch"})):
            settings = TrainSettings(epochs=2, batch_size=64, strategy=strategy, precision="float32",
                                     validation_fraction=0, patience=0, verbose=0, seed=5)
            model, history = train(lambda: zoo.create(name, (28, 28, 1), 8, **options), x, settings=settings,
                                   run_dir=sys.argv[1] + f"/{strategy}-{name}", run_name=name)
            out[f"{strategy}/{name}"] = {"loss": history[-1]["loss"],
                                         "weights": [w.tolist() for w in model.get_weights()],
                                         "replicas": model.distribute_strategy.num_replicas_in_sync}
            if name == "conv_ae":  # precise BN under each strategy, and what it replaced
                out[f"{strategy}/{name}"]["batch_norm_recomputed"] = bool(np.allclose(
                    [norm.moving_variance.numpy() for norm in batch_norm_layers(model)],
                    [norm.moving_variance.numpy() for norm in batch_norm_layers(recomputed(model, x))]))
    print(json.dumps(out))
""")


@pytest.mark.slow  # trains a VAE and a conv AE in a subprocess, mirrored over two devices and not
def test_mirrored_strategy_over_two_devices_agrees_with_one_device(tmp_path):
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path)], env=ENV, cwd=REPO,
                            capture_output=True, text=True, check=True)
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert runs["mirrored/vae"]["replicas"] == 2 and runs["default/vae"]["replicas"] == 1
    assert runs["default/conv_ae"]["batch_norm_recomputed"] and runs["mirrored/conv_ae"]["batch_norm_recomputed"]
    single, mirrored = runs["default/dense_ae"], runs["mirrored/dense_ae"]
    for a, b in zip(single["weights"], mirrored["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-4, rtol=0)
    vae_single, vae_mirrored = runs["default/vae"]["loss"], runs["mirrored/vae"]["loss"]
    assert abs(vae_mirrored - vae_single) / vae_single < 0.02, (vae_single, vae_mirrored)


def tiny_run(tmp_path, epochs=4, **settings):
    x = zoo.data.load("digits").x_train[:256]
    options = {"epochs": epochs, "batch_size": 32, "patience": 0, "verbose": 0, "validation_fraction": 0, **settings}
    return x, dict(settings=TrainSettings(**options), run_dir=tmp_path, run_name="tiny")


def build_tiny():
    return zoo.create("dense_ae", (8, 8, 1), 4, hidden_units=[16])


BUILDERS = {
    "dense_ae": build_tiny,
    "vae": lambda: zoo.create("vae", (8, 8, 1), 4, backbone="dense", backbone_config={"hidden_units": [16]}),
}


def poison_batch(epoch, step, element_only=False, seed=0):
    """A batch transform that puts NaN into batch `step` of `epoch` (0-based; 8 batches an epoch).

    The batch is recognised by its generator, seeded from (seed, epoch, step), not by counting
    calls: Keras reads batches ahead and peeks at the first one, more or less often by version.
    """
    target = np.random.default_rng([seed, epoch, step]).bit_generator.state

    def transform(xb, yb, rng):
        if rng.bit_generator.state != target:
            return xb, yb
        xb = xb.copy()
        if element_only:
            xb[0, 3, 3, 0] = np.nan
        else:
            xb[:] = np.nan
        return xb, yb

    return transform


def assert_stopped_with_finite_checkpoint(tmp_path, error, completed_epochs):
    message = str(error.value)
    assert "NaN" in message and "\n" not in message and "last good checkpoint" in message
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text()) if completed_epochs else None
    if not completed_epochs:
        assert "none yet" in message
        assert not list((tmp_path / "checkpoints").glob("*.keras"))
        return
    assert state["epoch"] == completed_epochs and str(tmp_path / "checkpoints" / state["checkpoint"]) in message
    assert all(np.isfinite(row["loss"]) for row in state["history"])
    for name in (state["checkpoint"], checkpoints.BEST_FILE):
        restored = keras.models.load_model(tmp_path / "checkpoints" / name)
        assert all(np.isfinite(w).all() for w in restored.get_weights()), name


@pytest.mark.parametrize("model", sorted(BUILDERS))
@pytest.mark.parametrize("epoch,step,element_only", [
    (0, 0, False),  # the very first batch
    (2, 3, False),  # mid-epoch
    (1, 5, True),  # one value of one batch
], ids=["first-batch", "mid-epoch", "one-element"])
def test_nan_stops_the_run_and_keeps_only_finite_checkpoints(tmp_path, model, epoch, step, element_only):
    x, kwargs = tiny_run(tmp_path, epochs=5)
    with pytest.raises(ZooError) as error:
        training.train(BUILDERS[model], x, transform=poison_batch(epoch, step, element_only), **kwargs)
    assert_stopped_with_finite_checkpoint(tmp_path, error, completed_epochs=epoch)


class CorruptWeightsSilently(keras.callbacks.Callback):
    """Turns weights NaN after an epoch's last batch, so no logged loss ever sees them: as when a
    CPU's NaN handling in clipping keeps the loss finite. The guard must look at the weights."""

    def __init__(self, at_batch):
        super().__init__()
        self.at_batch, self.seen = at_batch, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_batch:
            kernel = self.model.trainable_weights[0]
            kernel.assign(keras.ops.where(keras.ops.arange(kernel.shape[-1]) == 0, np.nan, kernel))


@pytest.mark.parametrize("model", sorted(BUILDERS))
def test_weights_turning_nan_under_a_finite_loss_stop_the_run(tmp_path, model):
    x, kwargs = tiny_run(tmp_path, epochs=4)
    with pytest.raises(ZooError, match="weights became NaN or infinite during epoch 2") as error:
        training.train(BUILDERS[model], x, callbacks=[CorruptWeightsSilently(at_batch=16)], **kwargs)
    assert_stopped_with_finite_checkpoint(tmp_path, error, completed_epochs=1)


def test_a_full_disk_while_saving_fails_cleanly_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    x, kwargs = tiny_run(tmp_path, epochs=4)
    real_save, saves = keras.Model.save, []

    def save_until_disk_fills(self, path, *args, **kw):
        saves.append(path)
        if len(saves) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, path, *args, **kw)

    monkeypatch.setattr(keras.Model, "save", save_until_disk_fills)
    with pytest.raises(ZooError) as error:
        training.train(build_tiny, x, **kwargs)
    assert "No space left on device" in str(error.value) and "--resume" in str(error.value)
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert not [f for f in files if "partial" in f], files
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and state["checkpoint"] in files
    monkeypatch.setattr(keras.Model, "save", real_save)
    keras.models.load_model(tmp_path / "checkpoints" / state["checkpoint"])


class SlowEpochs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.5)


def test_training_time_is_summed_over_resumes(tmp_path):
    x, kwargs = tiny_run(tmp_path, epochs=2)
    training.train(build_tiny, x, callbacks=[SlowEpochs()], **kwargs)
    before = checkpoints.train_seconds(tmp_path)
    assert before >= 1.0
    started = time.perf_counter()
    training.train(build_tiny, x, **{**kwargs, "settings": TrainSettings(**{**vars(kwargs["settings"]), "epochs": 4})},
                   resume=True)
    resumed_part = time.perf_counter() - started
    total = checkpoints.train_seconds(tmp_path)
    assert before < total <= before + resumed_part


def schedule_of(optimizer):
    """The optimizer's learning rate as a function of the step."""
    return keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])


def test_optimizer_keys_build_adamw_with_warm_up_cosine_decay_and_clipping():
    settings = TrainSettings(epochs=10, learning_rate=0.01, optimizer="adamw", weight_decay=0.05, lr_schedule="cosine",
                             warmup_epochs=2, gradient_clip_norm=1.0, use_ema=True, ema_momentum=0.9)
    optimizer = training.make_optimizer(settings, steps_per_epoch=10)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == 0.05
    assert optimizer.global_clipnorm == 1.0 and optimizer.use_ema and optimizer.ema_momentum == 0.9
    rate = schedule_of(optimizer)
    assert float(rate(0)) == 0 and float(rate(10)) == pytest.approx(0.005) and float(rate(20)) == pytest.approx(0.01)
    assert float(rate(60)) == pytest.approx(0.005, rel=1e-3) and float(rate(100)) == pytest.approx(0, abs=1e-6)
    constant = training.make_optimizer(TrainSettings(epochs=10, learning_rate=0.01, warmup_epochs=1), 10)
    assert isinstance(constant, keras.optimizers.Adam) and not isinstance(constant, keras.optimizers.AdamW)
    assert float(schedule_of(constant)(5)) == pytest.approx(0.005) and float(schedule_of(constant)(90)) == pytest.approx(0.01)
    assert training.make_optimizer(TrainSettings(learning_rate=0.01), 10).get_config()["learning_rate"] == pytest.approx(0.01)


class StopAfter(keras.callbacks.Callback):
    """Ends `fit` after `epochs` epochs, as an interruption would (no early-stopping mark)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


def test_resume_is_exact_with_schedule_clipping_and_weight_average(tmp_path):
    keys = dict(optimizer="adamw", lr_schedule="cosine", warmup_epochs=1, gradient_clip_norm=0.5, use_ema=True,
                ema_momentum=0.8, validation_fraction=0.25)
    x, kwargs = tiny_run(tmp_path / "whole", epochs=4, **keys)
    whole, _ = training.train(build_tiny, x, **kwargs)
    x, kwargs = tiny_run(tmp_path / "resumed", epochs=4, **keys)
    training.train(build_tiny, x, callbacks=[StopAfter(2)], **kwargs)
    resumed, history = training.train(build_tiny, x, resume=True, **kwargs)
    assert len(history) == 4
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    # what is returned is the best epoch's weight average, not its raw weights
    best = keras.models.load_model(tmp_path / "whole" / "checkpoints" / checkpoints.BEST_FILE)
    raw = best.get_weights()
    best.optimizer.finalize_variable_values(best.trainable_variables)
    for average, returned in zip(best.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(returned, average, atol=1e-7, rtol=0)
    assert any(not np.allclose(a, b) for a, b in zip(best.get_weights(), raw))


def test_resume_refuses_a_folder_of_another_run(tmp_path):
    x, kwargs = tiny_run(tmp_path, epochs=1)
    training.train(build_tiny, x, **kwargs)
    with pytest.raises(ZooError, match="holds a 'tiny' run, not 'other'"):
        training.train(build_tiny, x, **{**kwargs, "run_name": "other"}, resume=True)
    with pytest.raises(ZooError, match="nothing to resume"):
        training.train(build_tiny, x, **{**kwargs, "run_dir": tmp_path / "empty"}, resume=True)


def test_one_example_with_a_validation_share_is_refused_before_training(tmp_path):
    x, kwargs = tiny_run(tmp_path, epochs=1, validation_fraction=0.1)
    with pytest.raises(ZooError, match="1 training example.* leave none to train on; .* set train.validation_fraction=0"):
        training.train(build_tiny, x[:1], **kwargs)
    assert not (tmp_path / "checkpoints").exists()


def test_data_outside_the_unit_range_is_refused_for_a_sigmoid_output(tmp_path):
    x, kwargs = tiny_run(tmp_path, epochs=1)
    standardised = (x - x.mean()) / x.std()
    with pytest.raises(ZooError, match=r"lies in \[-0.\d+, \d.\d+\] but the model's sigmoid output gives values in \[0, 1\] only"):
        training.train(build_tiny, standardised, **kwargs)
    assert not (tmp_path / "checkpoints").exists()
    linear = lambda: zoo.create("dense_ae", (8, 8, 1), 4, hidden_units=[16], output_activation="linear")  # noqa: E731
    settings = dataclasses.replace(kwargs["settings"], loss="mse")
    model, history = training.train(linear, standardised, **{**kwargs, "settings": settings})
    assert len(history) == 1 and np.isfinite(history[0]["loss"])


def test_the_psnr_loss_is_minus_the_recipes_mean_psnr_and_reloads_with_the_model(tmp_path):
    x, kwargs = tiny_run(tmp_path, epochs=6, loss="psnr", learning_rate=0.01)
    model, history = training.train(build_tiny, x, **kwargs)
    assert history[-1]["loss"] < history[0]["loss"] - 1.0  # dB gained
    loss = model.evaluate(x, x, verbose=0)
    assert -loss == pytest.approx(psnr(x, model.predict(x, verbose=0)), abs=1e-3)
    model.save(tmp_path / "psnr.keras")
    assert keras.models.load_model(tmp_path / "psnr.keras").evaluate(x, x, verbose=0) == pytest.approx(loss, rel=1e-5)


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    x, kwargs = tiny_run(tmp_path, epochs=30, patience=2, learning_rate=0.05, validation_fraction=0.25)
    model, history = training.train(build_tiny, x, **kwargs)
    val = [row["val_loss"] for row in history]
    best = int(np.argmin(val))
    assert len(history) == best + 1 + 2 < 30, "stops exactly `patience` epochs after the best one"
    x_val = x[-64:]
    assert model.evaluate(x_val, x_val, verbose=0) == pytest.approx(val[best], rel=1e-4)


def test_precision_auto_is_float32_on_a_cpu_and_is_restored_after():
    before = keras.config.dtype_policy().name
    with distribution.precision_policy("auto") as policy:
        assert policy == "float32"
    with distribution.precision_policy("mixed_bfloat16") as policy:
        assert keras.config.dtype_policy().name == policy == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before


@pytest.mark.parametrize("bad,expected", [
    ({"precision": "float8"}, "precision must be one of"),
    ({"strategy": "tpu"}, "strategy must be one of"),
    ({"loss": "huber"}, "unknown reconstruction loss"),
    ({"epochs": 0}, "train.epochs must be >= 1"),
    ({"optimizer": "sgd"}, "train.optimizer must be one of adam, adamw"),
    ({"lr_schedule": "step"}, "train.lr_schedule must be one of constant, cosine"),
    ({"warmup_epochs": -1}, "train.warmup_epochs must be a finite number >= 0"),
    ({"ema_momentum": 1.0}, "train.ema_momentum must be in"),
])
def test_bad_train_settings(bad, expected):
    with pytest.raises(ZooError, match=expected):
        TrainSettings(**bad)


def test_precise_batch_norm_statistics_are_the_average_of_full_batch_statistics_under_the_final_weights():
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0).astype("float32")  # 1797 real images, 64 pixels
    inner = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12), keras.layers.BatchNormalization(),
                              keras.layers.Dense(6), keras.layers.BatchNormalization()])
    model = keras.Sequential([keras.Input((64,)), inner])  # nested, as an encoder inside a classifier
    dense1, norm1, dense2, norm2 = inner.layers
    batches = [x[i * 256 : (i + 1) * 256] for i in range(3)]
    training.recompute_batch_norm_statistics(model, iter(batches))

    w1, b1 = dense1.get_weights()
    w2, b2 = dense2.get_weights()
    gamma, beta = norm1.get_weights()[:2]
    h1 = [b @ w1 + b1 for b in batches]
    h2 = [(gamma * (h - h.mean(0)) / np.sqrt(h.var(0) + norm1.epsilon) + beta) @ w2 + b2 for h in h1]
    for norm, inputs in ((norm1, h1), (norm2, h2)):
        np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean([h.mean(0) for h in inputs], 0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(norm.moving_variance.numpy(), np.mean([h.var(0) for h in inputs], 0), rtol=1e-4, atol=1e-5)
        assert norm.momentum == 0.99


@pytest.mark.parametrize("streamed", [False, pytest.param(True, marks=pytest.mark.slow)],  # streaming: the full suite
                         ids=["in memory, validated", "streamed, no validation"])
def test_training_leaves_batch_norm_statistics_of_the_returned_weights_on_a_sample_of_the_training_inputs(tmp_path, digits, streamed):
    """Every epoch ends with precise statistics (before validation, or before the checkpoint
    without it), so the model handed back has the statistics its own weights give on the
    training inputs, transform included."""
    x = digits.x_train
    noisy = lambda xb, yb, rng: (np.clip(xb + rng.normal(0, 0.3, xb.shape), 0, 1).astype("float32"), yb)  # noqa: E731
    settings = TrainSettings(epochs=2, batch_size=64, learning_rate=0.01, validation_fraction=0.0 if streamed else 0.2,
                             patience=0, verbose=0)
    model, _ = training.train(
        lambda: zoo.create("conv_ae", (8, 8, 1), 4, filters=[8], hidden_units=16, normalization="batch"),
        tf.data.Dataset.from_tensor_slices(x) if streamed else x,
        settings=settings, run_dir=tmp_path, run_name="bn", transform=noisy,
    )
    norms = zoo.layers.batch_norm_layers(model)
    assert norms
    kept = [(norm.moving_mean.numpy().copy(), norm.moving_variance.numpy().copy()) for norm in norms]
    assert not all(np.allclose(mean, 0) and np.allclose(variance, 1) for mean, variance in kept)

    if streamed:
        examples = len(x)
        sample = stream_batches(DatasetExamples(tf.data.Dataset.from_tensor_slices(x)), None, 64, settings.seed, 0, 1, noisy)
    else:
        examples = len(x) - int(len(x) * settings.validation_fraction)
        sample = EpochBatches(x[:examples], None, 64, settings.seed, 0, 1, noisy)
    training.recompute_batch_norm_statistics(model, training.precise_batch_norm_sample(sample, examples, 64)())
    for norm, (mean, variance) in zip(norms, kept):
        np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(norm.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)
