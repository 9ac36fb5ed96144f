"""The contrastive term on an autoencoder's code (train.contrastive_weight): its loss, what it
does to the codes, training, resume and refusals."""

import keras
import numpy as np
import pytest

import zoo
from recipes.engine import training
from recipes.engine.training import TrainSettings
from zoo.contrastive import ContrastiveTraining, random_views
from zoo.errors import ZooError


def test_nt_xent_is_zero_for_identical_twins_and_log_of_the_candidates_when_all_views_agree():
    twins = np.tile(np.eye(8, dtype="float32"), (2, 1))  # example i's two views: the same unit vector
    assert float(zoo.losses.nt_xent(twins, temperature=0.05)) < 1e-6
    swapped = np.concatenate([np.eye(8), np.roll(np.eye(8), 1, axis=0)]).astype("float32")
    # each view's nearest candidate is another example's: the loss is about 1 / temperature
    assert float(zoo.losses.nt_xent(swapped, temperature=0.05)) == pytest.approx(20.0, abs=0.1)
    alike = np.ones((16, 4), "float32")  # no view can tell its twin from the 14 others
    assert float(zoo.losses.nt_xent(alike, temperature=0.5)) == pytest.approx(np.log(15), rel=1e-5)


def build_small_conv():
    return zoo.create("conv_ae", (8, 8, 1), 8, filters=[16], hidden_units=32)


def twin_retrieval(autoencoder, x, seed=0):
    """Share of images whose code of one random view is nearest (cosine) to the code of its other view."""
    keras.utils.set_random_seed(seed)
    views = random_views()
    first, second = (autoencoder.encoder.predict(views(x, training=True), verbose=0) for _ in range(2))
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    second /= np.linalg.norm(second, axis=1, keepdims=True)
    return float(np.mean((first @ second.T).argmax(axis=1) == np.arange(len(x))))


@pytest.mark.slow  # trains until the views find their twins
def test_the_term_makes_each_view_find_its_twin_and_the_result_is_the_plain_autoencoder(tmp_path, digits):
    settings = dict(epochs=15, batch_size=64, learning_rate=3e-3, patience=0, validation_fraction=0.0, verbose=0)
    models = {}
    for weight in (0.0, 0.5):
        models[weight], history = training.train(
            build_small_conv, digits.x_train, settings=TrainSettings(contrastive_weight=weight, **settings),
            run_dir=tmp_path / str(weight), run_name="contrastive",
        )
    assert type(models[0.5]) is type(models[0.0]), "the wrapper and its projection head stay behind"
    assert history[-1]["contrastive"] < 0.8 * history[0]["contrastive"]
    plain, contrastive = (twin_retrieval(models[w], digits.x_test) for w in (0.0, 0.5))
    assert contrastive > plain + 0.15, (plain, contrastive)
    # and it still reconstructs, at some cost: far better than the mean image, worse than reconstruction alone
    errors = {w: np.mean((m.predict(digits.x_test, verbose=0) - digits.x_test) ** 2) for w, m in models.items()}
    mean_image = np.mean((digits.x_train.mean(axis=0) - digits.x_test) ** 2)
    assert errors[0.0] < errors[0.5] < 0.5 * mean_image, (errors, mean_image)


@pytest.mark.slow  # trains, interrupts and resumes a run
def test_resume_continues_the_contrastive_run_exactly_and_refuses_another_weight(tmp_path, digits):
    x = digits.x_train[:512]
    settings = TrainSettings(epochs=4, batch_size=64, patience=0, validation_fraction=0.0, verbose=0, contrastive_weight=0.2)
    whole, _ = training.train(build_small_conv, x, settings=settings, run_dir=tmp_path / "whole", run_name="c")

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    part = dict(settings=settings, run_dir=tmp_path / "resumed", run_name="c")
    training.train(build_small_conv, x, callbacks=[StopAfterTwo()], **part)
    with pytest.raises(ZooError, match=r"holds a run trained with other settings \(train.contrastive_weight: 0.2 -> 0.0\)"):
        training.train(build_small_conv, x, resume=True, **{**part, "settings": TrainSettings(
            epochs=4, batch_size=64, patience=0, validation_fraction=0.0, verbose=0)})
    resumed, history = training.train(build_small_conv, x, resume=True, **part)
    assert len(history) == 4
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_the_term_refuses_models_it_cannot_make_views_of():
    with pytest.raises(ZooError, match="needs a plain image autoencoder.*set train.contrastive_weight=0"):
        ContrastiveTraining(zoo.create("lstm_ae", (16, 2), 4, units=[8]))
    with pytest.raises(ZooError, match="needs a plain image autoencoder"):
        ContrastiveTraining(zoo.create("vae", (8, 8, 1), 4, backbone="dense", backbone_config={"hidden_units": [16]}))
    with pytest.raises(ZooError, match=r"images in \[0, 1\].*output_activation='linear'; use 'sigmoid'"):
        ContrastiveTraining(zoo.create("conv_ae", (8, 8, 1), 4, filters=[8], output_activation="linear"))
    with pytest.raises(ZooError, match="train.contrastive_weight must be a finite number >= 0"):
        TrainSettings(contrastive_weight=-0.1)


def test_mixed_precision_training_with_the_term_is_finite_and_scales_the_loss(tmp_path, digits):
    settings = TrainSettings(epochs=2, batch_size=64, patience=0, validation_fraction=0.0, verbose=0,
                             precision="mixed_float16", contrastive_weight=0.2)
    steps = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(self.model)

    model, history = training.train(
        lambda: zoo.create("conv_ae", (8, 8, 1), 8, filters=[16], hidden_units=32, normalization="batch"),
        digits.x_train[:512], settings=settings, run_dir=tmp_path, run_name="mixed", callbacks=[Watch()],
    )
    trained = steps[-1]
    assert isinstance(trained, ContrastiveTraining) and isinstance(trained.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(np.isfinite(row[key]) for row in history for key in ("loss", "reconstruction", "contrastive"))
    assert history[-1]["contrastive"] < history[0]["contrastive"]
    assert model.dtype_policy.name == "mixed_float16" and model(digits.x_test[:4]).dtype == "float32"
