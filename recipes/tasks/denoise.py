"""Denoising: train on (noisy, clean) pairs with fresh noise every batch, evaluate per noise type.

Baselines on the same test images: the noisy input itself, the best of a median and a
Gaussian filter (best by PSNR over a few sizes, chosen on the test split, so it is generous),
and keras.io's denoising autoencoder trained on the same noisy/clean pairs (`tutorials.DENOISER`).
Training streams large image folders; every method is scored on the first `eval_examples` test
images, decoded into memory.
"""

import numpy as np
from scipy import ndimage

from recipes.engine.evaluation import first_examples, predict, psnr, ssim
from recipes.engine.report import Results, image_grid
from recipes.tasks import tutorials
from zoo.data import gaussian_noise, salt_and_pepper


def noise_functions(params):
    """{label: f(x, rng) -> noisy x} for the configured noise levels: Gaussian at `sigma` and each of
    `extra_sigmas`, then salt and pepper."""
    def gaussian(sigma):
        return lambda x, rng: gaussian_noise(x, sigma, rng)

    sigmas = [params["sigma"], *params["extra_sigmas"]]
    return {
        **{f"gaussian σ={sigma}": gaussian(sigma) for sigma in sigmas},
        f"salt-and-pepper {params['salt_pepper']:.0%}": lambda x, rng: salt_and_pepper(x, params["salt_pepper"], rng),
    }


def best_filter(noisy, clean):
    """(name, filtered images) of the classical filter with the best PSNR."""
    spatial = (1, 3, 3, 1) if noisy.ndim == 4 else (1, 3, 3)
    candidates = {"median 3x3": ndimage.median_filter(noisy, size=spatial)}
    for sigma in (0.5, 1.0):
        candidates[f"Gaussian σ={sigma}"] = ndimage.gaussian_filter(noisy, sigma=[0, sigma, sigma, 0][: noisy.ndim])
    name = max(candidates, key=lambda k: psnr(clean, candidates[k]))
    return name, candidates[name]


def run(ctx):
    data = ctx.load_data()
    noises = noise_functions(ctx.params)

    def corrupt(x, y, rng):  # each example gets one noise type, drawn per batch
        kinds = list(noises.values())
        which = rng.integers(0, len(kinds), len(x))
        noisy = np.empty_like(x)
        for k, add_noise in enumerate(kinds):
            noisy[which == k] = add_noise(x[which == k], rng)
        return noisy, y

    model, _ = ctx.train(ctx.build_model(data.input_shape), data.x_train, transform=corrupt)
    ctx.model = model
    results, rows = Results(), []
    tutorial = tutorials.train(ctx, tutorials.DENOISER, results, data.x_train, transform=corrupt)

    clean, scored = first_examples(data.x_test, ctx.params["eval_examples"])
    results.notes.append(f"every method is scored on {scored}, each noise drawn with a fixed seed")
    for label, add_noise in noises.items():
        noisy = add_noise(clean, np.random.default_rng(1234))
        denoised = predict(model, noisy)
        filter_name, filtered = best_filter(noisy, clean)
        outputs = {"autoencoder": denoised, "noisy input": noisy, "best filter": filtered}
        if tutorial:
            outputs[tutorials.DENOISER.label] = predict(tutorial, noisy)
        for metric, fn in (("PSNR (dB)", psnr), ("SSIM", ssim)):
            results.add(f"{metric}, {label}", {method: fn(clean, images) for method, images in outputs.items()})
        if tutorial:
            tutorials.add_comparison(results, f"PSNR (dB), {label}", "autoencoder", tutorials.DENOISER, difference=True)
        results.notes.append(f"best filter for {label}: {filter_name}")
        rows += [(f"{label}: noisy", noisy), ("denoised", denoised), (f"{filter_name}", filtered), ("clean", clean)]
    # What each network does to an image without noise: the ceiling its code sets on every noise level.
    unchanged = {"autoencoder": predict(model, clean)}
    if tutorial:
        unchanged[tutorials.DENOISER.label] = predict(tutorial, clean)
    results.add("PSNR (dB), no noise (clean input)", {method: psnr(clean, images) for method, images in unchanged.items()})
    results.plots.append(image_grid(ctx.run_dir, "denoise_grid", rows))
    return results, data
