"""The inpaint recipe end to end on the embedded MNIST subset (--quick)."""

import pytest

pytestmark = pytest.mark.slow  # recipe runs

BASELINES = ("mean fill", "biharmonic")


@pytest.fixture(scope="module")
def inpaint_run(quick_run):
    return quick_run("inpaint")


def test_autoencoder_fills_holes_better_than_both_baselines(inpaint_run):
    _, metrics = inpaint_run
    hole_psnr = metrics["metrics"]["PSNR (dB), occluded pixels"]
    for baseline in BASELINES:
        assert hole_psnr["autoencoder"] > hole_psnr[baseline] + 1.0, baseline  # dB: a visible margin


def test_every_method_is_scored_on_every_metric(inpaint_run):
    _, metrics = inpaint_run
    hole_psnr, whole_psnr, whole_ssim = (
        metrics["metrics"][m] for m in ("PSNR (dB), occluded pixels", "PSNR (dB), whole image", "SSIM, whole image")
    )
    for values in (hole_psnr, whole_psnr, whole_ssim):
        assert set(values) == {"autoencoder", *BASELINES, "occluded input", "tutorial denoiser"}
    assert all(0 < v <= 1 for v in whole_ssim.values())
    # visible pixels are kept, so every whole image is closer to the clean one than its hole alone
    assert all(whole_psnr[method] > hole_psnr[method] for method in hole_psnr)


def test_the_tutorial_denoiser_is_trained_on_the_same_occlusions_and_compared(inpaint_run):
    run_dir, metrics = inpaint_run
    hole_psnr = metrics["metrics"]["PSNR (dB), occluded pixels"]
    assert hole_psnr["occluded input"] + 2 < hole_psnr["tutorial denoiser"] < 40  # trained to fill holes
    difference = metrics["metrics"]["PSNR (dB), occluded pixels, ours - tutorial denoiser"]["autoencoder"]
    assert difference == pytest.approx(hole_psnr["autoencoder"] - hole_psnr["tutorial denoiser"])
    assert (run_dir / "tutorial" / "history.csv").exists()


def test_run_folder_holds_model_history_grid_and_report(inpaint_run):
    run_dir, metrics = inpaint_run
    for path in ("model.keras", "model/history.csv", "plots/inpaint_grid.png", "report.md", "metrics.json"):
        assert (run_dir / path).exists(), path
    assert any("every method is scored on all 300 test images" in note for note in metrics["notes"])
