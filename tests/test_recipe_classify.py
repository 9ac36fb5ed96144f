"""The classify recipe: its helpers on small arrays, then end to end on the embedded MNIST subset (--quick)."""

import numpy as np
import pytest

from recipes.engine.run import run_recipe
from recipes.tasks.classify import (
    confident_pseudo_labels,
    labelled_subset,
    probe_head_weights,
)
from zoo.errors import ZooError

pytestmark = pytest.mark.slow  # recipe runs


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


def test_pseudo_labels_are_each_class_most_confident_predictions():
    probabilities = np.array([
        [0.90, 0.05, 0.05],  # class 0, most confident
        [0.60, 0.30, 0.10],  # class 0, least confident: left out at 2 per class
        [0.70, 0.20, 0.10],  # class 0
        [0.10, 0.80, 0.10],  # class 1
        [0.20, 0.45, 0.35],  # class 1
        [0.05, 0.15, 0.80],  # class 2: the only one, still picked
    ])
    indices, classes = confident_pseudo_labels(probabilities, per_class=2)
    assert indices.tolist() == [0, 2, 3, 4, 5]
    assert classes.tolist() == [0, 0, 1, 1, 2]
    assert confident_pseudo_labels(probabilities, per_class=1)[0].tolist() == [0, 3, 5]


@pytest.fixture(scope="module")
def classify_run(quick_run):
    return quick_run("classify")


def test_pretrained_encoder_beats_the_same_network_from_scratch_with_few_labels(classify_run):
    _, metrics = classify_run
    accuracy = metrics["metrics"]["accuracy, 1% labels"]  # mean over 3 draws of 40 labels, 1000 test images each
    # Pretrained by inpainting (the default), seeds 0-3 gave gains of 3.3, 3.3, 5.9 and 0.3 points (by
    # reconstruction 2.4-5.5): the pretraining's seed moves the gain more than the test set does. CI runs seed 0.
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


def test_a_contrastive_term_joins_the_pretraining_and_not_the_classifiers(tmp_path):
    sets = ["train.contrastive_weight=0.1", "params.label_fractions=[0.1]", "params.label_draws=1",
            "params.tutorial_baseline=false"]
    run_dir, metrics = run_recipe("classify", quick=True, out=tmp_path / "classify", sets=sets, verbose=0)
    columns = {tag: (run_dir / tag / "history.csv").read_text().splitlines()[0].split(",")
               for tag in ("pretrain", "finetune-10pct", "scratch-10pct")}
    assert {"contrastive", "reconstruction"} <= set(columns["pretrain"])
    assert "contrastive" not in columns["finetune-10pct"] and "contrastive" not in columns["scratch-10pct"]
    assert metrics["model"] == "conv_ae"  # model.keras is the autoencoder, without the training wrapper


def test_shifted_and_mirrored_labelled_images_train_both_classifiers(tmp_path):
    sets = ["params.label_fractions=[0.1]", "params.label_draws=1", "params.tutorial_baseline=false"]
    runs = {
        augment: run_recipe("classify", quick=True, from_preset="conv_ae_fashion_mnist", out=tmp_path / augment,
                            sets=sets + extra, verbose=0)[1]
        for augment, extra in (("plain", []), ("augmented", ["params.augment_shift=2", "params.augment_flip=true"]))
    }
    accuracy = {augment: metrics["metrics"]["accuracy, 10% labels"] for augment, metrics in runs.items()}
    # Same labelled subset, batches and initial weights: only the augmentation tells the runs apart.
    assert all(accuracy["plain"][method] != accuracy["augmented"][method] for method in ("autoencoder", "from scratch"))
    assert any("each image shifted by up to 2 pixels and mirrored left-right at random" in note
               for note in runs["augmented"]["notes"])
    assert not any("shifted" in note for note in runs["plain"]["notes"])


def test_self_training_adds_a_student_on_pseudo_labels_below_every_label(tmp_path):
    rounds = 2  # the second round's teacher is the first round's student
    sets = ["params.label_fractions=[0.1, 1.0]", "params.label_draws=1", "params.tutorial_baseline=false",
            "params.pseudo_labels_per_class=100", "params.pseudo_label_epochs=3",
            f"params.pseudo_label_rounds={rounds}"]
    # One pretraining epoch: the students' training is under test, not the encoder's.
    run_dir, metrics = run_recipe("classify", quick=True, epochs=1, out=tmp_path / "classify", sets=sets, verbose=0)
    accuracy = metrics["metrics"]["accuracy, 10% labels"]
    methods = ("autoencoder", "from scratch")
    assert set(accuracy) == {*methods, *(f"{method} + pseudo-labels" for method in methods)}
    assert all(accuracy[f"{method} + pseudo-labels"] > 0.5 for method in methods)  # 10 classes: chance is 0.1
    assert set(metrics["metrics"]["accuracy, 100% labels"]) == set(methods)  # nothing left unlabelled
    for teacher in ("finetune", "scratch"):
        students = [f"{teacher}-pseudo-10pct"] + [f"{teacher}-pseudo-10pct-round{r}" for r in range(2, rounds + 1)]
        for student in students:
            assert len((run_dir / student / "history.csv").read_text().splitlines()) == 1 + 3
        assert not (run_dir / f"{teacher}-pseudo-10pct-round{rounds + 1}").exists()
        assert not (run_dir / f"{teacher}-pseudo-100pct").exists()
    assert any("100 per class" in note for note in metrics["notes"])


def test_self_training_needs_a_fraction_with_unlabelled_images(tmp_path):
    sets = ["params.label_fractions=[1.0]", "params.pseudo_labels_per_class=100"]
    with pytest.raises(ZooError, match="pseudo_labels_per_class.*below 1.0"):
        run_recipe("classify", quick=True, out=tmp_path / "classify", sets=sets, verbose=0)
    assert not (tmp_path / "classify" / "pretrain").exists()  # refused before anything trained


def test_masked_pretraining_trains_a_masked_ae_whose_encoder_both_classifiers_share(tmp_path):
    sets = ["params.pretraining=masked", "params.label_fractions=[0.1]", "params.label_draws=1",
            "params.tutorial_baseline=false", "params.classifier_epochs=1", "params.min_pass_examples=256",
            "model.backbone_config={patch_size=7, embed_dim=48, num_heads=2, num_layers=1, ff_dim=32}"]
    run_dir, metrics = run_recipe("classify", quick=True, model="masked_ae", epochs=1, out=tmp_path / "classify",
                                  sets=sets, verbose=0)
    assert metrics["model"] == "masked_ae"  # model.keras is the pretrained masked autoencoder
    assert (run_dir / "pretrain" / "history.csv").read_text().splitlines()[0].split(",")[1:] == ["loss", "val_loss"]
    accuracy = metrics["metrics"]["accuracy, 10% labels"]
    assert set(accuracy) == {"autoencoder", "from scratch"}
    assert all(0.0 <= value <= 1.0 for value in accuracy.values())
    assert any("75% of its patches hidden" in note for note in metrics["notes"])


@pytest.mark.parametrize("model, pretraining", [("conv_ae", "masked"), ("masked_ae", "inpaint")])
def test_masked_pretraining_and_the_masked_ae_go_together(tmp_path, model, pretraining):
    with pytest.raises(ZooError, match="--model masked_ae --set params.pretraining=masked"):
        run_recipe("classify", quick=True, model=model, out=tmp_path / "classify",
                   sets=[f"params.pretraining={pretraining}"], verbose=0)
    assert not (tmp_path / "classify" / "pretrain").exists()  # refused before anything trained
