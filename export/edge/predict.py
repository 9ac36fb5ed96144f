"""`aezoo predict`: files in, files out through the edge runtime (images read as training reads them)."""

from pathlib import Path

import numpy as np

from export.edge import micro_runtime
from export.edge.interpreter import (
    KERNEL_LABELS,
    SIGNATURES,
    EdgeError,
    write_atomically,
)
from export.edge.runtime import load

PREDICT_SIGNATURES = ("reconstruct", "encode", "decode", "sample")
PREDICT_RUNTIMES = ("tflite", "micro")


def predict_file(artifact, input_path, output_path=None, signature="reconstruct", runtime="tflite", kernels="default"):
    """Runs `artifact` on an image, a folder of images or a .npy file and writes the result; what `aezoo predict` does.

    Args:
        artifact: a .tflite file from `aezoo export`, or one of its onnx/<signature>.onnx files.
        input_path: an image (.png, .jpg, ...: read as training reads images, scaled to [0, 1],
            converted to the model's channels and resized to its height and width), a folder of
            images, or a .npy float array of one example or of n examples; for `sample`, a .npy
            of noise eps (n, latent_dim) or a count n.
        output_path: a .npy file (any result) or .png file (images in [0, 1]); for a folder of
            images, a folder that gets one output per image (.png images, .npy codes). None:
            only report.
        signature: reconstruct, encode, decode or sample.
        runtime: "tflite" (ai_edge_litert / tflite_runtime) or "micro" (a micro/ file of
            `aezoo export --micro` in the TFLite Micro interpreter, as a board runs it).
        kernels: the TFLite interpreter's "default" or "reference" kernels (see `load`).

    Returns:
        A one-line summary of what ran, what was converted, and where the result went.

    Example:
        >>> print(predict_file("out/model_int8.tflite", "photos/", "reconstructions/"))
    """
    if signature not in PREDICT_SIGNATURES:
        raise EdgeError(f"unknown signature {signature!r}; choose one of: {', '.join(PREDICT_SIGNATURES)}")
    if runtime not in PREDICT_RUNTIMES:
        raise EdgeError(f"unknown runtime {runtime!r}; choose one of: {', '.join(PREDICT_RUNTIMES)}")
    model = _loaded_model(artifact, runtime, kernels)
    model.require(signature)  # before the input is read: its shape depends on the signature
    input_path = Path(input_path)
    result, source, images, notes = _run_on_input(model, signature, input_path)
    summary = (
        f"{signature} with {model.path.name} on {model.runtime}{KERNEL_LABELS[kernels]}: {source}{notes} -> "
        f"{result.dtype} {result.shape} in [{result.min():.4g}, {result.max():.4g}]"
    )
    if output_path is None:
        return summary + f"; pass -o {'DIR' if images else 'FILE.npy or FILE.png'} to save it"
    if images:
        _write_outputs(input_path, images, Path(output_path), result, is_image=signature != "encode")
    else:
        _write_output(Path(output_path), result, is_image=signature != "encode")
    return f"{summary}; wrote {output_path}"


def _loaded_model(artifact, runtime, kernels):
    """The artifact loaded in the TFLite interpreter or, for runtime "micro", in TFLite Micro."""
    if runtime == "micro":
        if kernels != "default":
            raise EdgeError(f"kernels={kernels!r} chooses TFLite interpreter kernels; TFLite Micro has its own: drop it")
        return micro_runtime.load(artifact)
    return load(artifact, kernels=kernels)


def _run_on_input(model, signature, input_path):
    """(result, what it ran on, the image files of a folder or None, notes on converted images) of one run."""
    if signature == "sample" and str(input_path).isdigit():
        count = int(str(input_path))
        return model.sample(count, seed=0), f"{count} draws of eps (seed 0)", None, ""
    shape = model.input_shape if signature in ("reconstruct", "encode") else model.code_shape
    images = image_files(input_path) if input_path.is_dir() else None
    values, notes = _read_inputs(images or [input_path], shape)
    result = model.run(signature, values)[SIGNATURES[signature].outputs[0]]
    return result, f"{len(values)} example(s) from {input_path.name}", images, notes


# What training reads from an image folder (zoo.image_files, which the board side cannot import).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale's, as in training


def image_files(folder):
    """A folder's images (sorted, sub-folders included) as `aezoo predict` reads them."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EdgeError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def _read_inputs(paths, example_shape):
    """(n, *example_shape) float array of the files and a note on what was resized or converted ('' if nothing)."""
    arrays, resized, converted = [], {}, 0
    for path in paths:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            pixels, size, was_converted = _read_image(path, example_shape)
            if size != tuple(example_shape[1::-1]):
                resized[size] = resized.get(size, 0) + 1
            converted += was_converted
            arrays.append(pixels[None])
        else:
            arrays.append(_read_array(path, example_shape))
    notes = ""
    if resized:
        sizes = ", ".join(f"{w}x{h}" for w, h in sorted(resized))
        notes += f"; resized {sum(resized.values())} image(s) from {sizes} to {example_shape[1]}x{example_shape[0]}"
    if converted:
        notes += f"; converted {converted} image(s) to {'grayscale' if _channels(example_shape) == 1 else 'RGB'}"
    return np.concatenate(arrays), notes


def _read_array(path, example_shape):
    """(n, *example_shape) float array from a .npy file (n examples or one)."""
    if not path.is_file():
        raise EdgeError(f"{path}: no such input file")
    if path.suffix.lower() != ".npy":
        raise EdgeError(f"{path}: unsupported input type {path.suffix or '(none)'}; give an image, a folder of images or a .npy file")
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise EdgeError(f"{path} is not a readable .npy file ({str(error).splitlines()[0]})") from None
    return values[None] if values.shape == tuple(example_shape) else values


def _channels(example_shape):
    # (H, W) sequences read a grayscale image as rows; (H, W, C) images need C of 1 or 3.
    channels = 1 if len(example_shape) == 2 else example_shape[-1] if len(example_shape) == 3 else None
    if channels not in (1, 3):
        raise EdgeError(f"an image cannot hold one input of shape {tuple(example_shape)}; give a .npy file")
    return channels


def _read_image(path, example_shape):
    """One image as training reads it: [0, 1] floats, colour converted to the model's channels
    (alpha dropped), resized (bilinear, antialiased) to its height and width. Returns the pixels,
    the stored (width, height) and whether the colour mode was converted."""
    from PIL import Image, UnidentifiedImageError

    channels = _channels(example_shape)
    if not path.is_file():
        raise EdgeError(f"{path}: no such input file")
    try:
        with Image.open(path) as image:
            colour = image.mode not in ("1", "L", "LA", "I", "I;16", "F")
            size = image.size
            pixels = np.asarray(image.convert("RGB" if colour else "L"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise EdgeError(f"{path} is not a readable image ({error})") from None
    if colour and channels == 1:
        pixels = pixels @ GRAY_WEIGHTS
    elif not colour and channels == 3:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    pixels = pixels.reshape(*pixels.shape[:2], -1)
    height, width = example_shape[:2]
    if size != (width, height):
        pixels = np.stack([np.asarray(Image.fromarray(pixels[..., c]).resize((width, height), Image.BILINEAR))
                           for c in range(pixels.shape[-1])], axis=-1)
    return pixels.reshape(example_shape), size, colour != (channels == 3)


def _write_outputs(input_folder, images, out_dir, result, is_image):
    """One output per image under out_dir, at the image's place in input_folder: .png images, .npy codes."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeError(f"{out_dir} is a file; give a folder for the outputs of a folder of images")
    if not out_dir.parent.is_dir():
        raise EdgeError(f"{out_dir.parent}: no such output folder")
    out_dir.mkdir(exist_ok=True)
    for image, output in zip(images, result):
        path = (out_dir / image.relative_to(input_folder)).with_suffix(".png" if is_image else ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_output(path, output[None], is_image)


def _write_output(path, result, is_image):
    suffix = path.suffix.lower()
    if suffix == ".npy":
        write_atomically(path, lambda f: np.save(f, result))
    elif suffix == ".png":
        write_atomically(path, lambda f: _png_strip(result, is_image).save(f, format="PNG"))
    else:
        raise EdgeError(f"{path}: unsupported output type {suffix or '(none)'}; use .npy or .png")


def _png_strip(images, is_image):
    """The n images side by side as one 8-bit PNG image."""
    from PIL import Image

    if not is_image or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise EdgeError(f"a result of shape {images.shape} is not an image; write it to a .npy file")
    if images.min() < 0 or images.max() > 1:
        raise EdgeError(
            f"PNG output needs values in [0, 1], the result spans [{images.min():.4g}, {images.max():.4g}]; use .npy"
        )
    strip = np.concatenate(list(images), axis=1)
    pixels = np.round(strip * 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels)
