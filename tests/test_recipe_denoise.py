"""The denoise recipe end to end (--quick): beats the noisy input and the best classical filter."""

import pytest

from recipes.engine.run import run_recipe

pytestmark = pytest.mark.slow  # recipe runs


@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "denoise"
    return out, run_recipe("denoise", quick=True, export=True, out=out, verbose=0)[1]


def test_denoise_beats_the_noisy_input_and_the_best_filter(denoise_run):
    _, metrics = denoise_run
    psnr_rows = {k: v for k, v in metrics["metrics"].items() if k.startswith("PSNR") and "ours - " not in k}
    unchanged = psnr_rows.pop("PSNR (dB), no noise (clean input)")
    assert list(psnr_rows) == [f"PSNR (dB), {noise}" for noise in ("gaussian σ=0.5", "gaussian σ=0.3", "salt-and-pepper 30%")]
    # A clean image comes back closer to itself than a noisy one is denoised (the code's ceiling).
    assert unchanged["autoencoder"] > psnr_rows["PSNR (dB), gaussian σ=0.5"]["autoencoder"]
    assert set(unchanged) == {"autoencoder", "tutorial denoiser"}
    for row, values in psnr_rows.items():
        assert values["autoencoder"] > values["noisy input"], row
    for row in ("PSNR (dB), gaussian σ=0.5", "PSNR (dB), salt-and-pepper 30%"):
        assert psnr_rows[row]["autoencoder"] > psnr_rows[row]["best filter"], row
    # At σ=0.3 the quick run's 32-dim code, not the noise, bounds its PSNR, and a Gaussian filter
    # can win (the full preset does beat it); what must hold is that less noise is not denoised worse.
    assert psnr_rows["PSNR (dB), gaussian σ=0.3"]["autoencoder"] > psnr_rows["PSNR (dB), gaussian σ=0.5"]["autoencoder"]


def test_the_tutorial_denoiser_is_trained_beside_ours_on_the_same_pairs(denoise_run):
    out, metrics = denoise_run
    for noise in ("gaussian σ=0.5", "salt-and-pepper 30%"):
        psnr = metrics["metrics"][f"PSNR (dB), {noise}"]
        assert psnr["noisy input"] + 2 < psnr["tutorial denoiser"] < 40, noise  # trained, in dB of a real denoiser
        difference = metrics["metrics"][f"PSNR (dB), {noise}, ours - tutorial denoiser"]["autoencoder"]
        assert difference == pytest.approx(psnr["autoencoder"] - psnr["tutorial denoiser"])
    assert (out / "tutorial" / "history.csv").exists()
    assert any(note.startswith("tutorial denoiser: keras.io's") for note in metrics["notes"])


def test_denoise_writes_the_run_folder(denoise_run):
    out, metrics = denoise_run
    for name in ("config.json", "model.keras", "metrics.json", "report.md", "plots/denoise_grid.png",
                 "model/history.csv", "model/checkpoints/state.json"):
        assert (out / name).exists(), name
    assert list((out / "model" / "logs").rglob("*tfevents*")), "TensorBoard logs"
    report = (out / "report.md").read_text()
    assert "| PSNR (dB)" in report and "![denoise_grid](plots/denoise_grid.png)" in report
    assert metrics["train_examples"] == 2000 and metrics["test_examples"] == 300
    assert "## Edge export" in report and (out / "export" / "metadata.json").exists()
    assert (out / "export" / "model_int8.tflite").exists(), "--export calibrates int8 on the run's data"
