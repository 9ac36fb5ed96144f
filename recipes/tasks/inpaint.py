"""Inpainting: train on (occluded, clean) pairs with a fresh random rectangle per image and batch.

The autoencoder's output is pasted into the hole and the visible pixels are kept, as the
baselines do: mean fill (the training split's mean image in the hole), biharmonic
inpainting (scikit-image), and keras.io's denoising autoencoder, the nearest tutorial network,
trained on the same occluded/clean pairs (`tutorials.DENOISER`). Scores: PSNR on the occluded
pixels, PSNR and SSIM on the whole image.
PSNR is pooled over the test images (see `pooled_psnr`). Training streams large image folders;
the scores are on the first `eval_examples` test images, decoded into memory.
"""

import numpy as np
from skimage.restoration import inpaint_biharmonic

from recipes.engine.evaluation import first_examples, mean_example, predict, psnr, ssim
from recipes.engine.report import Results, image_grid
from recipes.tasks import tutorials
from recipes.tasks.transforms import occlusion_transform
from zoo.data import random_occlusion


def biharmonic_fill(occluded, mask):
    """Biharmonic inpainting of every image's masked pixels (images (n, H, W) or (n, H, W, C))."""
    channel_axis = -1 if occluded.ndim == 4 else None
    holes = mask.max(axis=-1) > 0 if channel_axis is not None else mask > 0
    return np.stack([
        inpaint_biharmonic(image, hole, channel_axis=channel_axis) for image, hole in zip(occluded, holes)
    ]).astype("float32")


def pooled_psnr(clean, restored, mask=None):
    """One PSNR from the squared error over all images' pixels (only the masked ones when `mask` is given).

    A mean of per-image PSNRs misleads here: a hole on blank background is filled exactly
    by leaving it at 0 or by biharmonic inpainting of a blank border, and that image's PSNR
    is then the 100 dB floor of `psnr`, which dominates the mean.
    """
    as_one_image = lambda a: None if a is None else a.reshape(1, -1)  # noqa: E731
    return psnr(as_one_image(clean), as_one_image(restored), as_one_image(mask))


def run(ctx):
    data = ctx.load_data()
    sizes = {"min_fraction": ctx.params["min_fraction"], "max_fraction": ctx.params["max_fraction"]}
    occlude = occlusion_transform(**sizes)
    model, _ = ctx.train(ctx.build_model(data.input_shape), data.x_train, transform=occlude)
    ctx.model = model
    results = Results()
    tutorial = tutorials.train(ctx, tutorials.DENOISER, results, data.x_train, transform=occlude)

    clean, scored = first_examples(data.x_test, ctx.params["eval_examples"])
    occluded, mask = random_occlusion(clean, np.random.default_rng(1234), **sizes)
    hole = mask > 0
    restored = {
        "autoencoder": np.where(hole, predict(model, occluded), occluded),
        "mean fill": np.where(hole, mean_example(data.x_train), occluded),
        "biharmonic": biharmonic_fill(occluded, mask),
        "occluded input": occluded,
    }
    if tutorial:
        restored[tutorials.DENOISER.label] = np.where(hole, predict(tutorial, occluded), occluded)
    results.add("PSNR (dB), occluded pixels", {k: pooled_psnr(clean, v, mask) for k, v in restored.items()})
    results.add("PSNR (dB), whole image", {k: pooled_psnr(clean, v) for k, v in restored.items()})
    results.add("SSIM, whole image", {k: ssim(clean, v) for k, v in restored.items()})
    if tutorial:
        tutorials.add_comparison(results, "PSNR (dB), occluded pixels", "autoencoder", tutorials.DENOISER, difference=True)
    subset = " (biharmonic inpainting is slow)" if len(clean) < len(data.x_test) else ""
    results.notes += [
        f"every method is scored on {scored}{subset}, each with one rectangle "
        f"({sizes['min_fraction']:.0%}-{sizes['max_fraction']:.0%} of each side) drawn with a fixed seed; "
        f"{mask.mean():.1%} of the pixels are occluded",
        "the networks' outputs fill the hole only; visible pixels are kept from the input, as for the other baselines",
        "mean fill: the training split's mean image in the hole; occluded input: the hole left at 0",
        "PSNR is 10·log10(1/MSE) with the MSE over all these images' (occluded) pixels, not a mean of "
        "per-image PSNRs: a hole on blank background filled exactly would count as 100 dB and dominate that mean",
    ]
    rows = [("occluded", occluded), ("inpainted", restored["autoencoder"]), ("biharmonic", restored["biharmonic"])]
    results.plots.append(image_grid(ctx.run_dir, "inpaint_grid", [*rows, ("clean", clean)]))
    return results, data
