"""Shared by the backends whose train step is traced (JAX, TensorFlow)."""

from keras import ops


def schedules_at(schedules, flags, step, cache=None):
    step = ops.cast(step, "int32")
    due = []
    for schedule, flag in zip(schedules, flags):
        should_prune, sparsity = schedule(step)
        begin_step = getattr(schedule, "begin_step", None)
        if begin_step is not None:
            first = ops.logical_and(
                ops.equal(flag, 0), ops.greater_equal(step, begin_step)
            )
            should_prune = ops.logical_or(should_prune, first)
            flag.assign(ops.where(should_prune, 1, flag.value))
        due.append((should_prune, sparsity))
    return due
