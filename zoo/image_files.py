"""Image folders read with tf.data: checked once when loaded, then decoded in parallel batch by batch.

`scan_folder` lists a folder's images (sub-folders = classes), decodes every one in parallel
once to learn its size and colour mode, and refuses unreadable images, an empty folder and,
unless `image_size` / `color_mode` say how to convert them, images of different sizes or modes.
`ImageFiles` is the result: a list of files that behaves like an image array where the zoo
needs one (`len`, `shape`, slicing) and decodes them on demand as a `tf.data.Dataset`.
"""

import dataclasses
import re
from pathlib import Path

import numpy as np

from zoo.backend import import_tensorflow
from zoo.errors import DataNotFoundError, ZooError

tf = import_tensorflow("reading image folders")

# What tf.io.decode_image reads; TIFF it cannot.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
UNREADABLE_SUFFIXES = {".tif", ".tiff"}
COLOR_MODES = {"grayscale": 1, "rgb": 3}
DECODE_BATCH = 256


def decode_failure(error):
    """What a failed image decode says, without TensorFlow's op and device names around it
    (`{{function_node __wrapped__DecodeImage_device_...}} Invalid PNG. ... [Op:DecodeImage] name:`)."""
    message = str(getattr(error, "message", error)).strip().splitlines()[0]
    message = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", message).strip()
    return message or "not a decodable image"


def _mode(channels):
    return "grayscale" if channels in (1, 2) else "RGB"  # 2 and 4: with an alpha channel, which is dropped


def raw_image(content):
    return tf.io.decode_image(content, expand_animations=False)


@dataclasses.dataclass(frozen=True, eq=False)  # eq would compare file arrays element-wise
class ImageFiles:
    """Image files read as float32 images in [0, 1] of shape `image_shape`, decoded on demand.

    Args:
        files: the image paths, as a NumPy array of str.
        image_shape: (height, width, channels) every image is decoded to.
        resize: resize to image_shape's height and width (else every file already has them).

    Example:
        >>> images = zoo.data.load("photos/", stream=True).x_train
        >>> for batch in images.dataset(batch_size=64): ...
    """

    files: np.ndarray
    image_shape: tuple
    resize: bool = False

    ndim = 4  # like the (n, H, W, C) arrays it stands in for

    def __len__(self):
        return len(self.files)

    @property
    def shape(self):
        return (len(self), *self.image_shape)

    def __getitem__(self, key):
        """A slice or index array of the files (still files: nothing is decoded)."""
        return dataclasses.replace(self, files=self.files[key])

    def encoded(self, path):
        """The encoded image bytes of one entry of `files` (a graph function for tf.data)."""
        return tf.io.read_file(path)

    def decode(self, path):
        """One entry of `files` -> a float32 (H, W, C) image in [0, 1] (a graph function for tf.data)."""
        image = tf.image.convert_image_dtype(raw_image(self.encoded(path)), tf.float32)
        channels = self.image_shape[-1]
        has_colour = tf.shape(image)[-1] >= 3
        if channels == 1:
            image = tf.cond(has_colour, lambda: tf.image.rgb_to_grayscale(image[..., :3]), lambda: image[..., :1])
        else:
            image = tf.cond(has_colour, lambda: image[..., :3], lambda: tf.image.grayscale_to_rgb(image[..., :1]))
        if self.resize:  # its float weights lift a white pixel a rounding error above 1
            image = tf.clip_by_value(tf.image.resize(image, self.image_shape[:2], antialias=True), 0.0, 1.0)
        return tf.ensure_shape(image, self.image_shape)

    def examples(self, order=None, labels=None):
        """A dataset of (image, target) in `order` (a tensor of indices; default: file order),
        decoded in parallel; the target is the image itself, or labels[i] when labels are given."""
        files = tf.constant(self.files)
        indices = tf.data.Dataset.from_tensor_slices(tf.range(len(self), dtype=tf.int64) if order is None else order)
        targets = None if labels is None else tf.constant(labels)

        def load(i):
            image = self.decode(tf.gather(files, i))
            return image, image if targets is None else tf.gather(targets, i)

        return indices.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def dataset(self, batch_size=DECODE_BATCH):
        """The images in file order as batches (no targets), prefetched."""
        return self.examples().map(lambda image, _: image).batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def numpy(self):
        """Every image decoded into one float32 array (the in-memory path)."""
        if not len(self):
            return np.zeros((0, *self.image_shape), "float32")
        return np.concatenate(list(self.dataset().as_numpy_iterator()))


def list_images(folder):
    """A folder's image files (sorted) and their class names (sub-folder names; empty if none)."""
    found = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    tiff = next((p for p in found if p.suffix.lower() in UNREADABLE_SUFFIXES), None)
    if tiff:
        raise ZooError(f"{tiff}: TIFF images are not read (tf.io decodes {', '.join(sorted(IMAGE_SUFFIXES))}); convert them to PNG")
    files = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    classes = sorted({p.parent.name for p in files if p.parent != Path(folder)})
    return files, classes


def _shapes(files):
    """(n, 3) height, width, channels of every file, decoded in parallel; -1 rows for unreadable files."""
    def shape(i, path):
        return i, tf.shape(raw_image(tf.io.read_file(path)))

    numbered = tf.data.Dataset.from_tensor_slices((tf.range(len(files)), [str(p) for p in files]))
    readable = numbered.map(shape, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    shapes = np.full((len(files), 3), -1)
    for indices, batch in readable.batch(4096).as_numpy_iterator():
        shapes[indices] = batch
    return shapes


def _describe(shape):
    return f"{shape[1]}x{shape[0]} {_mode(shape[2])}"


def scan_folder(folder, image_size=None, color_mode=None):
    """A folder's images as `ImageFiles`, their labels and class names, checked by decoding each once.

    Args:
        image_size: [height, width] to resize every image to (default: the first image's, and
            every image must have it).
        color_mode: "grayscale" or "rgb" to convert every image to (default: the first image's,
            and every image must have it).

    Returns:
        (ImageFiles, labels as int64 array or None, class names).
    """
    check_options(image_size, color_mode)
    files, classes = list_images(folder)
    shapes = _shapes(files)
    unreadable = np.flatnonzero(shapes[:, 0] < 0)
    if len(unreadable):
        path = files[unreadable[0]]
        try:
            raw_image(tf.io.read_file(str(path)))
            reason = "not a decodable image"
        except tf.errors.OpError as error:
            reason = decode_failure(error)
        raise unreadable_error(path, len(unreadable), reason)
    image_shape, resize = common_shape(shapes, files.__getitem__, image_size, color_mode)
    images = ImageFiles(np.array([str(p) for p in files]), image_shape, resize)
    labels = np.array([classes.index(p.parent.name) for p in files], "int64") if classes else None
    return images, labels, classes


def check_options(image_size, color_mode):
    """One-line errors for malformed `data.image_size` / `data.color_mode` values."""
    if image_size is not None and (
        len(image_size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_size)
    ):
        raise ZooError(f"data.image_size must be [height, width] in pixels, got {image_size!r}")
    if color_mode is not None and color_mode not in COLOR_MODES:
        raise ZooError(f"data.color_mode must be one of {', '.join(COLOR_MODES)}, got {color_mode!r}")


def unreadable_error(name, count, reason):
    more = f" (and {count - 1} more)" if count > 1 else ""
    return ZooError(f"cannot read image {name}{more} ({reason}); remove or replace it")


def common_shape(shapes, name_of, image_size=None, color_mode=None):
    """The (height, width, channels) every image is read as, and whether any needs resizing.

    Args:
        shapes: (n, 3) height, width, channels of each image as stored.
        name_of: fn(i) -> what an error calls image i (a path; a file and record number).
        image_size, color_mode: the options; without them every image must match the first.
    """
    first = shapes[0]
    for differs, option in (
        ((shapes[:, :2] != first[:2]).any(axis=1) if image_size is None else None, "data.image_size=[H, W]"),
        ((shapes[:, 2] >= 3) != (first[2] >= 3) if color_mode is None else None, "data.color_mode=grayscale|rgb"),
    ):
        if differs is not None and differs.any():
            odd = np.flatnonzero(differs)[0]
            raise ZooError(
                f"{name_of(odd)} is {_describe(shapes[odd])} but {name_of(0)} is {_describe(first)}; "
                f"give images of one size and one colour mode, or set {option} to convert them"
            )
    height, width = image_size or first[:2]
    channels = COLOR_MODES[color_mode] if color_mode else (1 if first[2] < 3 else 3)
    resize = image_size is not None and bool((shapes[:, :2] != image_size).any())
    return (int(height), int(width), channels), resize
