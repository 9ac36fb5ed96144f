"""A user's own finite `tf.data.Dataset` of examples, standing in for an array in training.

`training.train(build, dataset)` wraps a dataset in `DatasetExamples`, which gives it what the
zoo's other streamed sources have (`len`, `shape`, contiguous slices for a validation tail,
`dataset(batch_size)`, `numpy()`), read in the dataset's own order. A dataset has no random
access, so an epoch is not a permutation of indices as for files: `shuffled(seed)` passes the
examples through a shuffle buffer seeded by (seed, epoch), which is as deterministic (the same
seed, the same order, so `--resume` continues exactly) but mixes only within the buffer.
"""

import dataclasses

import numpy as np

from zoo.backend import import_tensorflow
from zoo.errors import ZooError

tf = import_tensorflow("training on a tf.data.Dataset")

SHUFFLE_BUFFER = 10_000  # examples the per-epoch shuffle mixes at a time
SEED_STRIDE = 1_000_003  # (seed, epoch) -> one shuffle seed: seed * SEED_STRIDE + epoch


def _count(dataset):
    """Examples in a finite dataset: its cardinality, or counted by reading it once."""
    known = int(dataset.cardinality())
    if known == tf.data.INFINITE_CARDINALITY:
        raise ZooError("the tf.data.Dataset is infinite (it repeats); pass one pass over the examples, without .repeat()")
    return known if known >= 0 else int(dataset.reduce(np.int64(0), lambda count, _: count + 1))


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetExamples:
    """Examples of a finite, unbatched `tf.data.Dataset` (each element x, or (x, y) with a label y).

    Args:
        source: the dataset, one example per element, float images or sequences of a fixed shape.
        start, stop: the examples of `source` this selection holds (a slice).

    Example:
        >>> frames = tf.data.Dataset.from_tensor_slices(x).map(augment)  # any finite pipeline
        >>> model, history = training.train(build, frames, settings=settings, run_dir="runs/mine", run_name="mine")
    """

    source: tf.data.Dataset
    start: int = 0
    stop: int | None = None

    def __post_init__(self):
        spec = self.source.element_spec
        x_spec = spec[0] if isinstance(spec, tuple) else spec
        if not isinstance(x_spec, tf.TensorSpec) or not x_spec.shape.is_fully_defined() or not x_spec.dtype.is_floating:
            raise ZooError(
                f"the tf.data.Dataset yields {spec}; give one unbatched float example per element (x, or (x, label)) "
                "of a fixed shape: drop .batch() and cast with .map(lambda x: tf.cast(x, tf.float32))"
            )
        if isinstance(spec, tuple) and len(spec) != 2:
            raise ZooError(f"the tf.data.Dataset yields {len(spec)} tensors per element; give x or (x, label)")
        if self.stop is None:
            object.__setattr__(self, "stop", _count(self.source))

    @property
    def labelled(self):
        return isinstance(self.source.element_spec, tuple)

    @property
    def ndim(self):
        return 1 + self._x_spec.shape.rank

    @property
    def _x_spec(self):
        spec = self.source.element_spec
        return spec[0] if self.labelled else spec

    def __len__(self):
        return self.stop - self.start

    @property
    def shape(self):
        return (len(self), *self._x_spec.shape)

    def __getitem__(self, key):
        """A contiguous slice (the only selection a dataset reads without going through everything)."""
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise ZooError("a tf.data.Dataset is read in order: select its examples by a contiguous slice, e.g. [:1000]")
        start, stop, _ = key.indices(len(self))
        return dataclasses.replace(self, start=self.start + start, stop=self.start + max(start, stop))

    def _selected(self):
        return self.source.skip(self.start).take(len(self))

    def examples(self, labels=None):
        """A dataset of (x, target), in the source's order: the target is the element's label if it
        has one, else x itself."""
        if labels is not None:
            raise ZooError("labels of a tf.data.Dataset come from its elements: give (x, label) pairs, not y")
        selected = self._selected()
        if self.labelled:
            return selected.map(lambda x, y: (tf.cast(x, tf.float32), y))
        return selected.map(lambda x: (tf.cast(x, tf.float32),) * 2)

    def shuffled(self, seed, epoch):
        """`examples()` through a shuffle buffer seeded by (seed, epoch)."""
        shuffle_seed = int(seed) * SEED_STRIDE + int(epoch)
        return self.examples().shuffle(min(SHUFFLE_BUFFER, len(self)), seed=shuffle_seed, reshuffle_each_iteration=False)

    def dataset(self, batch_size=256):
        """The inputs in order as float32 batches (no targets)."""
        inputs = self._selected()
        if self.labelled:
            inputs = inputs.map(lambda x, y: x)
        return inputs.map(lambda x: tf.cast(x, tf.float32)).batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def numpy(self):
        """Every selected input read into one float32 array."""
        return np.concatenate(list(self.dataset().as_numpy_iterator())) if len(self) else np.empty(self.shape, "float32")
