"""PyTorch runs eagerly: the step and each schedule are read once per
update in Python, and a kernel is masked in place."""

import torch
from keras import ops


def snapshot(variable):
    """The step as a Python int (an eager tensor would alias the variable)."""
    return int(ops.convert_to_numpy(variable))


def schedules_at(schedules, flags, step, cache):
    """`cache` (a set owned by the optimizer) remembers flags already seen
    at 1, so a step reads no flag from the device once pruning started."""
    due = []
    for index, (schedule, flag) in enumerate(zip(schedules, flags)):
        should_prune, sparsity = schedule(ops.convert_to_tensor(step, "int32"))
        should_prune = bool(should_prune)
        begin_step = getattr(schedule, "begin_step", None)
        if begin_step is not None and index not in cache:
            if not should_prune and step >= begin_step:
                should_prune = int(ops.convert_to_numpy(flag)) == 0
            if should_prune:
                flag.assign(1)
                cache.add(index)
        due.append((should_prune, sparsity))
    return due


def update_masks(entries, should_prune, compute, after=None):
    kernels = [entry.kernel.value for entry in entries]
    if should_prune:
        olds = [entry.mask.value for entry in entries]
        masked = [
            kernel * old.to(kernel.dtype) for kernel, old in zip(kernels, olds)
        ]
        news = compute(masked, olds)
        # Before the assigns: torch aliases `old`.
        keeps = [old * new for old, new in zip(olds, news)]
        updates = []
        if after is not None:
            variables, values_of = after
            updates = list(zip(variables, values_of(olds, news)))
        for entry, new in zip(entries, news):
            entry.mask.assign(new)
        for variable, value in updates:
            variable.assign(value)
    else:
        keeps = [entry.mask.value for entry in entries]
    with torch.no_grad():
        for kernel, keep in zip(kernels, keeps):
            kernel.mul_(keep.to(kernel.dtype))


def read_int(read):
    """The value `read()` returns, as a Python int."""
    return int(ops.convert_to_numpy(read()))
