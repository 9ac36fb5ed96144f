"""The classify recipe: its helpers on small arrays, then end to end on the embedded MNIST subset (--quick)."""

import csv

import keras
import numpy as np
import pytest

from recipes.classify import labelled_crossentropy, labelled_subset, probe_head_weights, with_unlabelled
from recipes.run import run_recipe


def test_labelled_subsets_are_stratified_and_nested():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    small, large = labelled_subset(y, 0.1, seed=0), labelled_subset(y, 0.5, seed=0)
    assert np.bincount(y[small]).tolist() == [10, 5, 3, 2]
    assert np.bincount(y[large]).tolist() == [50, 25, 15, 10]
    assert set(small) <= set(large)
    assert np.bincount(y[labelled_subset(y, 0.001, seed=0)]).tolist() == [1, 1, 1, 1]  # every class keeps one
    assert len(labelled_subset(y, 1.0, seed=0)) == len(y)


@pytest.mark.parametrize("classes", [2, 5])
def test_probe_head_predicts_what_the_logistic_regression_learned(classes):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, 300)
    codes = rng.normal(size=(300, 6)) * [1, 5, 0.1, 2, 3, 1] + labels[:, None] * 0.8 + 4  # unscaled, off-centre codes
    kernel, bias = probe_head_weights(codes, labels, classes + 1)  # the last class never occurs
    logits = codes @ kernel + bias
    assert kernel.shape == (6, classes + 1) and not kernel[:, -1].any()
    assert (logits.argmax(axis=1) != classes).all()
    assert np.mean(logits.argmax(axis=1) == labels) > 0.8


def test_labelled_crossentropy_averages_over_the_labelled_examples_alone():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4))
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype("float32")
    labels = np.array([2, -1, 0, -1, -1, 3])
    losses = keras.ops.convert_to_numpy(labelled_crossentropy(labels, probabilities))
    labelled = labels >= 0
    expected = -np.log(probabilities[labelled, labels[labelled]]).mean()
    assert losses.mean() == pytest.approx(expected, rel=1e-5)  # Keras' batch mean: 3 labelled of 6
    assert not losses[~labelled].any()


def test_a_semi_supervised_pass_adds_as_many_other_images_unlabelled():
    x = np.arange(30, dtype="float32").reshape(30, 1, 1, 1)  # each image holds its own index
    y = np.arange(30) % 3
    labelled = np.resize([4, 9, 20], 7)  # a small subset repeated to the pass length
    inputs, (labels, targets) = with_unlabelled(x, y, labelled, seed=0)
    indices = inputs.reshape(-1).astype(int)
    assert targets is inputs  # every image, labelled or not, is reconstructed
    assert indices[:7].tolist() == labelled.tolist() and labels[:7].tolist() == y[labelled].tolist()
    unlabelled = indices[7:]
    assert len(unlabelled) == 7 == len(set(unlabelled)) and not set(unlabelled) & {4, 9, 20}
    assert (labels[7:] == -1).all()


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    return run_recipe("classify", quick=True, out=tmp_path_factory.mktemp("runs") / "classify", verbose=0)


def test_pretrained_encoder_beats_the_same_network_from_scratch_with_few_labels(classify_run):
    _, metrics = classify_run
    accuracy = metrics["metrics"]["accuracy, 1% labels"]  # mean over 3 draws of 40 labels, 1000 test images each
    # Seeds 0-3 gave gains of 2.4-5.5 points; 1.5 points is well beyond the test-set noise of a paired comparison.
    assert accuracy["autoencoder"] > accuracy["from scratch"] + 0.015


def test_every_fraction_reports_both_accuracies(classify_run):
    _, metrics = classify_run
    for fraction in ("1%", "10%", "100%"):
        values = metrics["metrics"][f"accuracy, {fraction} labels"]
        assert set(values) == {"autoencoder", "from scratch"} | ({"tutorial CNN"} if fraction == "100%" else set())
        assert all(0.0 <= v <= 1.0 for v in values.values())


def test_the_tutorial_convnet_is_trained_on_every_label_and_compared_at_100_percent(classify_run):
    _, metrics = classify_run
    accuracy = metrics["metrics"]["accuracy, 100% labels"]
    assert 0.5 < accuracy["tutorial CNN"] <= 1.0  # 10 classes: chance is 0.1
    ratio = metrics["metrics"]["accuracy, 100% labels, ours / tutorial CNN"]["autoencoder"]
    assert ratio == pytest.approx(accuracy["autoencoder"] / accuracy["tutorial CNN"])


def test_run_folder_holds_every_model_the_confusion_plot_and_report(classify_run):
    run_dir, metrics = classify_run
    tags = ["pretrain", "finetune-100pct", "scratch-100pct", "tutorial"]  # below 100% of the labels: one model per draw
    tags += [f"{m}-{fraction}pct-draw{d}" for m in ("finetune", "scratch") for fraction in (1, 10) for d in (1, 2, 3)]
    for tag in tags:
        assert (run_dir / tag / "history.csv").exists(), tag
    for path in ("model.keras", "plots/confusion_matrix.png", "report.md"):
        assert (run_dir / path).exists(), path
    assert metrics["plots"] == ["plots/confusion_matrix.png"]
    assert metrics["model"] == "conv_ae"  # model.keras is the pretrained autoencoder
    assert any("3 draws" in note for note in metrics["notes"])


def test_fine_tuning_below_every_label_also_trains_the_reconstruction(classify_run):
    run_dir, _ = classify_run

    def logged(tag):
        with open(run_dir / tag / "history.csv") as f:
            return next(csv.reader(f))

    assert {"classes_loss", "output_loss"} <= set(logged("finetune-1pct-draw1"))  # cross-entropy + reconstruction
    assert "output_loss" not in logged("finetune-100pct")  # no unlabelled images left
    assert "output_loss" not in logged("scratch-1pct-draw1")  # the baseline sees labelled examples only
