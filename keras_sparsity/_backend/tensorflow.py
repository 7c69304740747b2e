"""TensorFlow: the mask is assigned inside the branch that recomputes it,
so a step that does not prune copies no mask."""

import tensorflow as tf
from keras import ops

from keras_sparsity._backend.traced import schedules_at

__all__ = ["read_int", "schedules_at", "snapshot", "update_masks"]


def update_masks(entries, should_prune, compute, after=None):
    kernels = [entry.kernel for entry in entries]

    def recompute():
        olds = [entry.mask.value for entry in entries]
        masked = [
            kernel.value * ops.cast(old, kernel.dtype)
            for kernel, old in zip(kernels, olds)
        ]
        news = compute(masked, olds)
        # Everything that reads the old masks is made before they are
        # assigned (a variable's `value` is read where it is used).
        keeps = [old * new for old, new in zip(olds, news)]
        updates = []
        if after is not None:
            variables, values_of = after
            updates = list(zip(variables, values_of(olds, news)))
        for entry, new in zip(entries, news):
            entry.mask.assign(new)
        for variable, value in updates:
            variable.assign(value)
        return keeps

    def unchanged():
        return [entry.mask.value for entry in entries]

    keeps = ops.cond(should_prune, recompute, unchanged)
    for kernel, keep in zip(kernels, keeps):
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
