"""JAX: variables are assigned outside `cond` (JAX's stateless scope
cannot see an assignment made inside a traced branch)."""

from keras import ops

from keras_sparsity._backend.traced import schedules_at

__all__ = ["read_int", "schedules_at", "snapshot", "update_mask"]


def update_mask(entry, should_prune, compute):
    old = entry.mask.value
    kernel = entry.kernel
    # One `cond` output: each output of a `cond` costs a copy of the mask
    # at steps that do not prune, the common case.
    new = ops.cond(
        should_prune,
        lambda: compute(kernel.value * ops.cast(old, kernel.dtype)),
        lambda: old,
    )
    entry.mask.assign(new)
    kernel.assign(kernel.value * ops.cast(old * new, kernel.dtype))


def read_int(read):
    """The value `read()` returns, as a Python int."""
    return int(ops.convert_to_numpy(read()))


def snapshot(variable):
    """The variable's value now (JAX arrays never change)."""
    return ops.convert_to_tensor(variable)
