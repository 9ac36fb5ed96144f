"""Training batches as pure functions of (seed, epoch, step): the same order and corruption
noise whether a run is resumed or not, and whether its examples sit in memory or are streamed."""

import functools
import math

import keras
import numpy as np

from zoo.backend import import_tensorflow


@functools.lru_cache(maxsize=1)  # every batch of an epoch asks for the same order
def epoch_order(seed, epoch, n, batch_size):
    """The example indices of `epoch`: a permutation seeded by (seed, epoch), each batch's slice
    sorted (contiguous reads from arrays, nearby files from folders)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for start in range(0, n, batch_size):
        order[start : start + batch_size].sort()
    return order


class EpochBatches(keras.utils.PyDataset):
    """Mini-batches for epochs initial_epoch .. epochs-1 as one sequence.

    Batch `step` of epoch `e` is a pure function of (seed, e, step): the order is a seeded
    permutation per epoch and `transform` (e.g. adding noise) gets a generator seeded the same
    way. A resumed run therefore sees exactly the batches an uninterrupted run would have.

    Args:
        x: inputs; y: targets (default: x, an autoencoder's target).
        transform: optional `f(x_batch, y_batch, rng) -> (inputs, targets)`.
    """

    def __init__(self, x, y, batch_size, seed, initial_epoch, epochs, transform=None):
        super().__init__()
        self.x, self.y = x, x if y is None else y
        self.batch_size, self.seed, self.transform = batch_size, seed, transform
        self.initial_epoch, self.epochs = initial_epoch, epochs
        self.steps_per_epoch = math.ceil(len(x) / batch_size)

    def __len__(self):
        return (self.epochs - self.initial_epoch) * self.steps_per_epoch

    def __getitem__(self, index):
        epoch, step = divmod(index, self.steps_per_epoch)
        epoch += self.initial_epoch
        batch = epoch_order(self.seed, epoch, len(self.x), self.batch_size)[step * self.batch_size : (step + 1) * self.batch_size]
        x, y = self.x[batch], self.y[batch]
        if self.transform is not None:
            x, y = self.transform(x, y, np.random.default_rng([self.seed, epoch, step]))
        return x, y


def stream_batches(source, labels, batch_size, seed, initial_epoch, epochs, transform=None):
    """The tf.data counterpart of `EpochBatches` for streamed examples (`ImageFiles`, `MappedRows`):
    the same order and transform seeds, so streamed and in-memory training see the same batches;
    examples are read in parallel. A user's `DatasetExamples` has no random access: its epochs
    are a shuffle buffer seeded by (seed, epoch) instead of the permutation."""
    tf = import_tensorflow("streaming training data with tf.data")
    from zoo.dataset_examples import DatasetExamples

    n = len(source)

    def epoch_batches(epoch):
        if isinstance(source, DatasetExamples):
            examples = source.shuffled(seed, epoch)
        else:
            order = tf.numpy_function(lambda e: epoch_order(seed, int(e), n, batch_size), [epoch], tf.int64)
            examples = source.examples(tf.ensure_shape(order, [n]), labels)
        return with_transform(examples.batch(batch_size), transform, [seed, epoch])

    if isinstance(source, DatasetExamples):
        # One dataset per epoch, chained: a shuffle seed must be a Python int, as TensorFlow
        # compares it with 0 in Python when the global seed is 0 (a tensor epoch fails there).
        per_epoch = [epoch_batches(epoch) for epoch in range(initial_epoch, epochs)]
        batches = functools.reduce(tf.data.Dataset.concatenate, per_epoch)
    else:
        batches = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    return batches.prefetch(tf.data.AUTOTUNE)


def with_transform(batches, transform, seed):
    """`batches` with `transform(x, y, rng)` applied to each, rng seeded by (*seed, batch number)."""
    if transform is None:
        return batches
    tf = import_tensorflow("streaming training data with tf.data")

    def apply(batch, step):
        x, y = batch
        seeds = tf.stack([tf.cast(s, tf.int64) for s in seed] + [step])
        inputs, targets = tf.numpy_function(
            lambda xb, yb, s: transform(xb, yb, np.random.default_rng(s.tolist())), [x, y, seeds], [x.dtype, y.dtype]
        )
        return tf.ensure_shape(inputs, x.shape), tf.ensure_shape(targets, y.shape)

    return tf.data.Dataset.zip(batches, tf.data.Dataset.range(2**62)).map(apply)
