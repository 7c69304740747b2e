"""Allocation: how a model's target sparsity is shared among its kernels.

Computed once, when a model is pruned, from the kernels' shapes; the
result is one *final* target per kernel, stored in its wrapper's config.
During training each kernel's sparsity follows the schedule's progress:
at a step where the schedule gives sparsity `s(t)` and its final sparsity
is `S`, a kernel with final target `t_k` is at `s(t) * t_k / S`, so the
total kept count follows `s(t)` at every step and every kernel reaches
its own target when the schedule ends.

* `"uniform"`: every kernel at the schedule's sparsity (TFMOT).
* `"erk"`: Erdős–Rényi-Kernel (Evci et al., 2020, "Rigging the Lottery",
  section 3): kernel `k` of shape `(d_1, ..., d_n)` gets density
  `min(1, eps * (d_1 + ... + d_n) / (d_1 * ... * d_n))`, with one `eps`
  solved so that the kept total is the model's target; kernels whose
  density would pass 1 stay dense and `eps` is solved again. Kept counts
  are rounded so that they sum to the target exactly.
* `"global"`: the kernels are ranked together, one threshold for all of
  them (see `masks.global_masks`); exactly `round(total * (1 - s))`
  weights are kept.

Per-layer overrides (`overrides={regex: value}`) fix some kernels first:
a key matches a kernel when it matches (`re.fullmatch`) the layer's name
or the kernel's path (e.g. `"dense_1"`, `".*/recurrent_kernel"`,
`"transformer_layer_0/.*"`). A value is a final sparsity in [0, 1), a
`PruningSchedule` (the layer's own schedule, whole layers only), or None
(left dense; a layer all of whose kernels are None is not wrapped). With
`"erk"` and `"global"` the model's target counts every kernel that would
be pruned without overrides, so the other kernels make up for the fixed
ones.
"""

import math
import re

import numpy as np

from keras_sparsity.schedules import PruningSchedule

ALLOCATIONS = ("uniform", "global", "erk")
LOCAL = "local"
GLOBAL = "global"


def check_allocation(allocation, overrides):
    """Validates `allocation` and `overrides`; returns `Overrides`."""
    if allocation not in ALLOCATIONS:
        raise ValueError(
            "Argument `allocation` must be 'uniform', 'global' or 'erk'. "
            f"Received: allocation={allocation!r}"
        )
    return Overrides(overrides)


def final_sparsity(schedule):
    """The sparsity `schedule` ends at (its `final_sparsity` or
    `target_sparsity` attribute), or None if it does not say."""
    for name in ("final_sparsity", "target_sparsity"):
        value = getattr(schedule, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return None


class Overrides:
    """Per-layer overrides: `{regex: sparsity | PruningSchedule | None}`."""

    def __init__(self, overrides):
        if overrides is None:
            overrides = {}
        if not isinstance(overrides, dict):
            raise TypeError(
                "Argument `overrides` must be a dict from a layer-name or "
                "kernel-path regex to a sparsity in [0, 1), a "
                "`PruningSchedule`, or None (leave dense). Received: "
                f"overrides={overrides!r}"
            )
        self.rules = []
        for key, value in overrides.items():
            try:
                pattern = re.compile(key)
            except (re.error, TypeError) as error:
                raise ValueError(
                    f"Argument `overrides` has a key that is not a regex "
                    f"({error}). Received: key {key!r}"
                ) from None
            if not (
                value is None
                or isinstance(value, PruningSchedule)
                or _is_sparsity(value)
            ):
                raise ValueError(
                    f"Argument `overrides` maps {key!r} to {value!r}; a value "
                    "must be a sparsity in [0, 1), a `PruningSchedule`, or "
                    "None (leave dense)."
                )
            self.rules.append((key, pattern, value))
        self.used = set()

    def __bool__(self):
        return bool(self.rules)

    def for_kernel(self, layer, variable):
        """`(found, value)` of the first rule matching this kernel."""
        for key, pattern, value in self.rules:
            if pattern.fullmatch(layer.name) or pattern.fullmatch(
                variable.path
            ):
                self.used.add(key)
                return True, value
        return False, None

    def for_layer(self, layer, variables):
        """`(found, value)` if one rule decides for every kernel of `layer`
        (its name matches, or every kernel path); a `PruningSchedule` or
        None that matches only some kernels is an error."""
        found = [self.for_kernel(layer, v) for v in variables]
        if variables and all(f for f, _ in found):
            values = {id(v) for _, v in found}
            if len(values) == 1:
                return found[0]
        for (matched, value), variable in zip(found, variables):
            if matched and isinstance(value, PruningSchedule):
                raise ValueError(
                    f"Argument `overrides` gives a schedule to kernel "
                    f"{variable.path!r} but not to every kernel of layer "
                    f"{layer.name!r}: a schedule applies to whole layers; "
                    "give the other kernels a sparsity instead."
                )
        return False, None

    def check_all_used(self):
        unused = [key for key, _, _ in self.rules if key not in self.used]
        if unused:
            raise ValueError(
                f"Argument `overrides` has keys that match no prunable layer "
                f"or kernel: {unused}. Keys are matched in full against layer "
                "names and kernel paths (such as 'dense_1/kernel')."
            )


def _is_sparsity(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 <= value < 1
    )


class _Kernel:
    """One kernel to allocate: its wrapper, index, size and fixed target."""

    def __init__(self, wrapper, index, variable):
        self.wrapper = wrapper
        self.index = index
        self.shape = tuple(variable.shape)
        self.size = math.prod(self.shape)
        self.fixed = None  # a final sparsity, when an override gives one


def assign_targets(wrappers, allocation, overrides, schedule, dense_sizes):
    """Sets `kernel_targets` on each wrapper.

    Args:
        wrappers: The built `PruneLowMagnitude` layers of the model.
        allocation: One of `ALLOCATIONS`.
        overrides: `Overrides` (kernel-level rules are applied here; layers
            that are not wrapped were decided by the caller).
        schedule: The model's schedule.
        dense_sizes: Sizes of the kernels an override left dense (their
            layers unwrapped): they count towards the model's total.
    """
    kernels, other_sizes, other_kept = [], 0, 0
    for wrapper in wrappers:
        if wrapper.pruning_schedule is not schedule:  # overridden schedule
            own = final_sparsity(wrapper.pruning_schedule) or 0.0
            for variable in wrapper.pruned_weights:
                size = math.prod(variable.shape)
                other_sizes += size
                other_kept += keep_count(size, own)
            continue
        for index, variable in enumerate(wrapper.pruned_weights):
            kernel = _Kernel(wrapper, index, variable)
            found, value = overrides.for_kernel(wrapper.layer, variable)
            if found:
                kernel.fixed = 0.0 if value is None else float(value)
            kernels.append(kernel)
    final = final_sparsity(schedule)
    if final is None and (
        allocation != "uniform" or any(k.fixed is not None for k in kernels)
    ):
        raise ValueError(
            f"Arguments `allocation={allocation!r}` and `overrides` with a "
            "sparsity need a schedule that states its final sparsity (a "
            "`final_sparsity` or `target_sparsity` attribute). Received: "
            f"pruning_schedule={schedule!r}"
        )
    if allocation == "uniform":
        for kernel in kernels:
            if kernel.fixed is not None:
                _set(kernel, kernel.fixed, LOCAL)
        return
    total = sum(k.size for k in kernels) + sum(dense_sizes) + other_sizes
    fixed_kept = (
        sum(keep_count(k.size, k.fixed) for k in kernels if k.fixed is not None)
        + sum(dense_sizes)
        + other_kept
    )
    free = [k for k in kernels if k.fixed is None]
    budget = keep_count(total, final) - fixed_kept
    free_size = sum(k.size for k in free)
    if free and not len(free) <= budget <= free_size:
        raise ValueError(
            f"Argument `allocation={allocation!r}` cannot reach sparsity "
            f"{final} over the model's {total} prunable weights: the kernels "
            f"fixed by `overrides` keep {fixed_kept}, which leaves "
            f"{budget} for the other {free_size} weights (at least "
            f"{len(free)}, at most {free_size}). Lower the overrides' "
            "densities or the target."
        )
    for kernel in kernels:
        if kernel.fixed is not None:
            _set(kernel, kernel.fixed, LOCAL)
    if not free:
        return
    if allocation == "global":
        pool = sparsity_for(free_size, budget)
        for kernel in free:
            _set(kernel, pool, GLOBAL)
        return
    kept = erk_kept([k.shape for k in free], budget)
    for kernel, count in zip(free, kept):
        _set(kernel, sparsity_for(kernel.size, count), LOCAL)


def _set(kernel, sparsity, ranking):
    wrapper = kernel.wrapper
    if wrapper.kernel_targets is None:
        wrapper.kernel_targets = [None] * len(wrapper.pruned_weights)
    wrapper.kernel_targets[kernel.index] = (float(sparsity), ranking)


def erk_kept(shapes, budget):
    """Kept counts per kernel under Erdős–Rényi-Kernel, summing to `budget`.

    Density `min(1, eps * sum(shape) / prod(shape))`, `eps` solved for the
    budget with dense kernels removed until none passes 1; the real-valued
    counts are rounded by largest remainder, at least 1 each.

    Args:
        shapes: Kernel shapes (tuples of ints).
        budget: Int, the total number of weights to keep, between
            `len(shapes)` and the total size.

    Returns:
        A list of ints, one per kernel.
    """
    sizes = np.array([math.prod(s) for s in shapes], dtype=np.float64)
    raw = np.array([sum(s) / math.prod(s) for s in shapes], dtype=np.float64)
    dense = np.zeros(len(shapes), dtype=bool)
    while True:
        rest = budget - sizes[dense].sum()
        eps = rest / (sizes[~dense] * raw[~dense]).sum()
        density = np.where(dense, 1.0, np.minimum(eps * raw, 1.0))
        newly = ~dense & (eps * raw >= 1.0)
        if not newly.any():
            break
        dense |= newly
        if dense.all():
            break
    exact = np.maximum(density * sizes, 1.0)
    kept = np.floor(exact).astype(np.int64)
    kept = np.minimum(kept, sizes.astype(np.int64))
    short = int(budget - kept.sum())
    order = np.argsort(-(exact - kept), kind="stable")
    room = sizes.astype(np.int64) - kept
    for i in order:
        if short <= 0:
            break
        if room[i] > 0:
            kept[i] += 1
            short -= 1
    while short < 0:  # the at-least-one floor overshot: take from the largest
        i = int(np.argmax(kept))
        kept[i] -= 1
        short += 1
    return [int(k) for k in kept]


def keep_count(size, sparsity):
    """`masks.keep_count` in NumPy float32: the kept count the engine will
    compute for `size` weights at `sparsity`."""
    kept = np.round(np.float32(size) * (np.float32(1) - np.float32(sparsity)))
    return int(min(max(kept, 1), size))


def sparsity_for(size, kept):
    """A sparsity at which the engine keeps exactly `kept` of `size`
    weights (float32 rounding included)."""
    sparsity = np.float32(1.0 - kept / size)
    for _ in range(64):
        found = keep_count(size, sparsity)
        if found == kept:
            return float(sparsity)
        step = np.float32(np.inf if found > kept else -np.inf)
        sparsity = np.nextafter(sparsity, step)
    raise ValueError(f"No float32 sparsity keeps {kept} of {size} weights.")
