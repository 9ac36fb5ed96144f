"""TFRecord files of images (tf.train.Example records: encoded image bytes, optionally a label).

`scan_tfrecords` takes one TFRecord file or a folder of shards (what TensorFlow Datasets and
most image pipelines write), indexes every record's byte offset from the TFRecord framing, and
parses and decodes each record once in parallel to check it. The result, `TFRecordImages`, is
`ImageFiles` whose entries are record numbers: each is read by its offset, so training visits
the records in the seeded per-epoch order of the array path without loading the files.
"""

import dataclasses
import struct
from pathlib import Path

import numpy as np

from zoo.backend import import_tensorflow
from zoo.errors import DataNotFoundError, ZooError
from zoo.image_files import ImageFiles, raw_image, check_options, common_shape, decode_failure, unreadable_error

tf = import_tensorflow("reading TFRecord files")

# The feature names of TensorFlow Datasets and of the TF models / slim convention, tried in order.
IMAGE_KEYS = ("image", "image/encoded")
LABEL_KEYS = ("label", "image/class/label")
HEADER_BYTES, FOOTER_BYTES = 12, 4  # uint64 length + its masked CRC32; the data's masked CRC32


def is_tfrecord(path):
    """Whether `path` is a TFRecord file (x.tfrecord, x.tfrecords, shards like x.tfrecord-00000-of-00004)
    or a folder holding such files."""
    path = Path(path)
    if path.is_dir():
        return bool(_shards(path))
    return ".tfrecord" in path.name


def _shards(folder):
    return sorted(p for p in folder.iterdir() if p.is_file() and ".tfrecord" in p.name)


@dataclasses.dataclass(frozen=True, eq=False)
class RecordIndex:
    """Where each record's bytes lie: its file, byte offset and length."""

    paths: tuple
    file: np.ndarray
    offset: np.ndarray
    length: np.ndarray

    def read(self, number):
        with open(self.paths[self.file[number]], "rb") as f:
            f.seek(self.offset[number])
            return f.read(self.length[number])

    def name(self, number):
        """How an error names a record: 'PATH record N' (N counted within its file)."""
        first_of_file = np.searchsorted(self.file, self.file[number])
        return f"{self.paths[self.file[number]]} record {number - first_of_file}"


def index_records(paths):
    """The `RecordIndex` of TFRecord files, read from their framing (headers only, no data)."""
    files, offsets, lengths = [], [], []
    for number, path in enumerate(paths):
        size, position = Path(path).stat().st_size, 0
        with open(path, "rb") as f:
            while position < size:
                header = f.read(HEADER_BYTES)
                length = struct.unpack("<Q", header[:8])[0] if len(header) == HEADER_BYTES else size
                if position + HEADER_BYTES + length + FOOTER_BYTES > size:
                    raise ZooError(
                        f"{path} is not a TFRecord file or is truncated (a record at byte {position} runs past its end); "
                        "write it again with tf.io.TFRecordWriter"
                    )
                files.append(number)
                offsets.append(position + HEADER_BYTES)
                lengths.append(length)
                position += HEADER_BYTES + length + FOOTER_BYTES
                f.seek(position)
    if not offsets:
        raise DataNotFoundError(f"no records in {', '.join(map(str, paths))}")
    return RecordIndex(tuple(map(str, paths)), np.array(files), np.array(offsets), np.array(lengths))


@dataclasses.dataclass(frozen=True, eq=False)
class TFRecordImages(ImageFiles):
    """`ImageFiles` whose `files` are record numbers into `index`, the image in feature `image_key`."""

    index: RecordIndex = None
    image_key: str = IMAGE_KEYS[0]

    def encoded(self, number):
        record = tf.numpy_function(lambda n: self.index.read(int(n)), [number], tf.string)
        return tf.io.parse_single_example(record, {self.image_key: tf.io.FixedLenFeature([], tf.string)})[self.image_key]


def _feature_key(features, given, defaults, what, option):
    """The feature to read: `given` (it must exist), else the first of `defaults` present (None if none)."""
    if given is not None and given not in features:
        raise ZooError(f"the records have no feature {given!r} for {option} (they have: {', '.join(sorted(features))})")
    found = given or next((key for key in defaults if key in features), None)
    if found is None and what == "image":
        raise ZooError(
            f"the records have no image feature ({' or '.join(map(repr, defaults))}; they have: {', '.join(sorted(features))}); "
            f"set {option}=NAME"
        )
    return found


def scan_tfrecords(source, image_size=None, color_mode=None, image_key=None, label_key=None):
    """The images of TFRecord files as `TFRecordImages`, with their labels.

    Args:
        source: a TFRecord file, a folder of them (read in sorted name order), or a list of files.
        image_size, color_mode: as for image folders (`scan_folder`).
        image_key: the feature holding the encoded image (default: 'image', else 'image/encoded').
        label_key: the int64 label feature (default: 'label', else 'image/class/label', else none).

    Returns:
        (TFRecordImages, labels as int64 array or None).
    """
    check_options(image_size, color_mode)
    if isinstance(source, (list, tuple)):
        index = index_records(source)
    else:
        index = index_records(_shards(Path(source)) if Path(source).is_dir() else [source])
    first = tf.train.Example.FromString(index.read(0)).features.feature
    image_key = _feature_key(first, image_key, IMAGE_KEYS, "image", "data.image_key")
    label_key = _feature_key(first, label_key, LABEL_KEYS, "label", "data.label_key")
    spec = {image_key: tf.io.FixedLenFeature([], tf.string)}
    if label_key:
        spec[label_key] = tf.io.FixedLenFeature([], tf.int64)

    def parsed(number, record):
        example = tf.io.parse_single_example(record, spec)
        return number, tf.shape(raw_image(example[image_key])), example.get(label_key, tf.constant(-1, tf.int64))

    n = len(index.offset)
    shapes, labels = np.full((n, 3), -1), np.full(n, -1)
    records = tf.data.Dataset.zip(tf.data.Dataset.range(n), tf.data.TFRecordDataset(list(index.paths)))
    for numbers, batch_shapes, batch_labels in (
        records.map(parsed, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().batch(4096).as_numpy_iterator()
    ):
        shapes[numbers], labels[numbers] = batch_shapes, batch_labels
    unreadable = np.flatnonzero(shapes[:, 0] < 0)
    if len(unreadable):
        try:
            parsed(0, index.read(int(unreadable[0])))
            reason = "not a decodable image"
        except (tf.errors.OpError, ValueError) as error:
            reason = decode_failure(error)
        raise unreadable_error(index.name(unreadable[0]), len(unreadable), reason)
    image_shape, resize = common_shape(shapes, index.name, image_size, color_mode)
    images = TFRecordImages(np.arange(n), image_shape, resize, index, image_key)
    return images, labels if label_key else None

