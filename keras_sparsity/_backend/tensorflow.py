"""TensorFlow: the mask is assigned inside the branch that recomputes it,
so a step that does not prune copies no mask."""

import tensorflow as tf
from keras import ops

from keras_sparsity._backend.traced import schedules_at

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


def read_int(read):
    """The value `read()` returns, as a Python int, also while a
    `tf.function` traces; None for a variable created inside it."""
    with tf.init_scope():
        value = tf.convert_to_tensor(read())
        return int(value.numpy()) if hasattr(value, "numpy") else None


def snapshot(variable):
    """The variable's value now, read before later assignments (a resource
    variable converted lazily would be read where it is used)."""
    return tf.identity(tf.convert_to_tensor(variable))
