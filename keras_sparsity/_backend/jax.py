"""JAX: variables are assigned outside `cond` (JAX's stateless scope
cannot see an assignment made inside a traced branch)."""

from keras import ops

from keras_sparsity._backend.traced import schedules_at

__all__ = ["read_int", "schedules_at", "snapshot", "update_masks"]


def update_masks(entries, should_prune, compute, after=None):
    olds = [entry.mask.value for entry in entries]
    kernels = [entry.kernel for entry in entries]

    def recompute():
        masked = [
            kernel.value * ops.cast(old, kernel.dtype)
            for kernel, old in zip(kernels, olds)
        ]
        return compute(masked, olds)

    # Only the masks come out of the `cond`: each output costs a copy of
    # the mask at steps that do not prune, the common case.
    news = ops.cond(should_prune, recompute, lambda: list(olds))
    for entry, kernel, old, new in zip(entries, kernels, olds, news):
        entry.mask.assign(new)
        kernel.assign(kernel.value * ops.cast(old * new, kernel.dtype))
    if after is not None:
        variables, values_of = after
        values = ops.cond(
            should_prune,
            lambda: values_of(olds, news),
            lambda: [v.value for v in variables],
        )
        for variable, value in zip(variables, values):
            variable.assign(value)


def read_int(read):
    """The value `read()` returns, as a Python int."""
    return int(ops.convert_to_numpy(read()))


def snapshot(variable):
    """The variable's value now (JAX arrays never change)."""
    return ops.convert_to_tensor(variable)
