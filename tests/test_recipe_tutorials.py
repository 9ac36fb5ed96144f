"""`params.tutorial_baseline = false` leaves the tutorial networks out of every image recipe."""

import pytest

from recipes.engine.run import resolve, run_recipe

pytestmark = pytest.mark.slow  # recipe runs

CHEAPEST = {  # the switch is what is checked, not the results: one epoch on 500 images
    "denoise": [],
    "inpaint": [],
    "classify": ["params.label_fractions=[1.0]", "params.classifier_epochs=1"],  # 100%: where the CNN would train
    "generate": ["params.importance_samples=2", "params.quality_samples=100", "params.classifier_epochs=1"],
}


@pytest.mark.parametrize("recipe", CHEAPEST)
def test_tutorial_baseline_false_trains_and_reports_no_tutorial_network(recipe, tmp_path):
    sets = ["params.tutorial_baseline=false", "quick.train_examples=500", "quick.test_examples=100", *CHEAPEST[recipe]]
    run_dir, metrics = run_recipe(recipe, quick=True, epochs=1, sets=sets, out=tmp_path / recipe, verbose=0)
    assert not (run_dir / "tutorial").exists()
    assert not [metric for metric in metrics["metrics"] if "tutorial" in metric]
    assert not [method for values in metrics["metrics"].values() for method in values if "tutorial" in method]
    assert not [note for note in metrics["notes"] if note.startswith(("tutorial", "no tutorial"))]


def test_the_quickstart_leaves_the_tutorial_network_out_and_the_recipes_train_it():
    assert resolve("quickstart")["params"]["tutorial_baseline"] is False  # it must stay under 3 minutes
    for recipe in ("reduce", *CHEAPEST):
        assert resolve(recipe)["params"]["tutorial_baseline"] is True, recipe


def test_the_quickstart_runs_end_to_end(tmp_path):
    # The README's main-job command; its [params] are its own, not the denoise recipe's defaults.
    sets = ["quick.train_examples=300", "quick.test_examples=100"]
    run_dir, metrics = run_recipe("quickstart", quick=True, epochs=1, sets=sets, out=tmp_path / "quickstart", verbose=0)
    assert (run_dir / "report.md").exists()
    gaussian = metrics["metrics"]["PSNR (dB), gaussian σ=0.5"]
    assert gaussian["autoencoder"] > gaussian["noisy input"]
