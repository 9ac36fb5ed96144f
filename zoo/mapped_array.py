"""Large arrays read row by row: a .npy file through a memory map, a series' windows as views.

`MappedRows` stands in for an (n, ...) float32 array where the zoo needs one (`len`, `shape`,
slicing, `examples` for the streamed training path), like `ImageFiles` does for image folders.
Rows are read and prepared (scaled, or a window standardised) batch by batch, never all at
once: the operating system pages a mapped file in as rows are read, and a series' windows are
strided views of the series, so memory stays bounded by the batches in flight.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from zoo.backend import import_tensorflow

CHECK_ROWS = 4096  # rows per chunk when the file is scanned for NaN/infinite values


def scaled(values):
    """Integer data divided by its type's maximum (uint8 -> /255), booleans as 0/1, floats as float32."""
    if values.dtype == bool:
        return values.astype("float32")
    if np.issubdtype(values.dtype, np.integer):
        return values.astype("float32") / np.iinfo(values.dtype).max
    return values.astype("float32")


@dataclasses.dataclass(frozen=True, eq=False)  # eq would compare arrays element-wise
class MappedRows:
    """Rows of a memory-mapped .npy array (or any array-like view), read as float32 on demand.

    Args:
        array: the file opened with `np.load(path, mmap_mode="r")`, or a view such as a series'
            sliding windows.
        rows: the indices of the array's rows this selection holds, in order.
        prepare: turns the rows read into the float32 examples (default `scaled`).

    Example:
        >>> x = zoo.data.load("big.npy", stream=True).x_train
        >>> x.shape, x[:256].numpy().dtype  # nothing is read until numpy() / examples()
    """

    array: np.ndarray
    rows: np.ndarray
    prepare: Callable = scaled

    def __len__(self):
        return len(self.rows)

    @property
    def shape(self):
        return (len(self), *self.array.shape[1:])

    @property
    def ndim(self):
        return self.array.ndim

    def __getitem__(self, key):
        """A slice or index array of the rows (still mapped: nothing is read)."""
        return dataclasses.replace(self, rows=self.rows[key])

    def read(self, rows):
        """The given file rows as a float32 array (sorted reads; returned in the order asked)."""
        order = np.argsort(rows, kind="stable")
        values = np.empty((len(rows), *self.array.shape[1:]), "float32")
        values[order] = self.prepare(self.array[rows[order]])
        return values

    def examples(self, order=None, labels=None):
        """A dataset of (x, target) in `order` (a tensor of positions; default: stored order);
        the target is x itself, or labels[i] when labels are given."""
        tf = import_tensorflow("streaming a memory-mapped file with tf.data")

        positions = tf.data.Dataset.from_tensor_slices(tf.range(len(self), dtype=tf.int64) if order is None else order)
        targets = None if labels is None else tf.constant(labels)
        example_shape = self.shape[1:]

        def load(i):
            x = tf.numpy_function(lambda p: self.read(self.rows[p : p + 1])[0], [i], tf.float32)
            x = tf.ensure_shape(x, example_shape)
            return x, x if targets is None else tf.gather(targets, i)

        return positions.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def dataset(self, batch_size=256):
        """The rows in stored order as float32 batches (no targets), read ahead."""
        tf = import_tensorflow("streaming a memory-mapped file with tf.data")

        starts = tf.data.Dataset.range(0, len(self), batch_size)
        batch_shape = (None, *self.shape[1:])
        read = lambda start: tf.ensure_shape(  # noqa: E731
            tf.numpy_function(lambda s: self.read(self.rows[s : s + batch_size]), [start], tf.float32), batch_shape
        )
        return starts.map(read).prefetch(tf.data.AUTOTUNE)

    def numpy(self):
        """Every row read into one float32 array (the in-memory path)."""
        return self.read(self.rows)

    def non_finite(self):
        """(how many NaN/infinite values the whole file holds, the index of the first or None), read in chunks."""
        count, first = 0, None
        if not np.issubdtype(self.array.dtype, np.floating):
            return count, first
        for start in range(0, len(self.array), CHECK_ROWS):
            bad = ~np.isfinite(self.array[start : start + CHECK_ROWS])
            if first is None and bad.any():
                at = np.argwhere(bad)[0]
                first = (start + int(at[0]), *(int(i) for i in at[1:]))
            count += int(bad.sum())
        return count, first
