"""TensorFlow: the mask is assigned inside the branch that recomputes it,
so a step that does not prune copies no mask."""

import tensorflow as tf
from keras import ops

from keras_sparsity._backend.traced import schedules_at
from keras_sparsity._backend.traced import snapshot

__all__ = ["read_int", "schedules_at", "snapshot", "update_mask"]


def update_mask(entry, should_prune, compute):
    kernel = entry.kernel

    def recompute():
        old = entry.mask.value
        new = compute(kernel.value * ops.cast(old, kernel.dtype))
        keep = old * new
        entry.mask.assign(new)
        return keep

    keep = ops.cond(should_prune, recompute, lambda: entry.mask.value)
    kernel.assign(kernel.value * ops.cast(keep, kernel.dtype))


def read_int(variable):
    """A variable's value in Python, also while a `tf.function` traces."""
    with tf.init_scope():
        return int(variable.numpy())
