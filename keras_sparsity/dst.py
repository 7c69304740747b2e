"""Dynamic sparse training: SET and RigL keep a model sparse from its first
step and move its connections while it trains.

At the schedule's `begin_step` each kernel gets a random mask at its
allocated sparsity (its dense weights survive only where the mask is 1).
Then, every `update_frequency` steps until `end_step`, each kernel drops
the `d` active weights of lowest magnitude and grows `d` inactive ones,
with `d = floor(f(t) * kept)` and `f(t) = drop_fraction * (1 + cos(pi *
(t - begin_step) / (end_step - begin_step))) / 2` (the cosine decay of
Evci et al., 2020, "Rigging the Lottery"). `SET` grows at random (Mocanu
et al., 2018), `RigL` where the gradient of the masked kernel is largest.
`StaticSparse` keeps its random mask: the baseline.

Exactness: the kept count of every kernel stays `round(size * (1 - s))`
at every step. A weight grows only from the inactive ones (never one
dropped in the same update), so it starts at exactly zero, and its slots
in the inner optimizer (Adam's moments, momentum) are reset to zero when
it grows: the optimizer sees it as a fresh weight. Gradients are not
masked (the kernels are masked after every step anyway).

Randomness: a counter-based hash of (seed, step, kernel path, position)
in int32 `keras.ops`, so masks are the same on every backend, for a seed,
and an interrupted and resumed run draws the same numbers.
"""

import math
import numbers
import zlib

import keras
from keras import ops

from keras_sparsity import masks as mask_math
from keras_sparsity.configurable import Configurable


class Regrowth(Configurable):
    """Base class of dynamic sparse training methods (`SET`, `RigL`).

    Args:
        update_frequency: Int >= 1, steps between drop-and-grow updates.
        drop_fraction: Float in (0, 1): the share of each kernel's active
            weights replaced at the first update, decayed by a cosine to 0
            at `end_step`.
        end_step: Int, the step from which masks stay fixed. Must lie after
            the schedule's `begin_step`.
        seed: Int, for the random initial masks (and SET's growth).
    """

    grows_by_gradient = False

    def __init__(
        self, update_frequency=100, drop_fraction=0.3, end_step=None, seed=0
    ):
        if not _is_int(update_frequency) or update_frequency < 1:
            raise ValueError(
                "Argument `update_frequency` must be an integer >= 1. "
                f"Received: update_frequency={update_frequency!r}"
            )
        if isinstance(drop_fraction, bool) or not (
            isinstance(drop_fraction, numbers.Real) and 0 < drop_fraction < 1
        ):
            raise ValueError(
                "Argument `drop_fraction` must be a float in (0, 1). "
                f"Received: drop_fraction={drop_fraction!r}"
            )
        if not _is_int(end_step) or end_step < 0:
            raise ValueError(
                "Argument `end_step` must be an integer >= 0: the step after "
                "which masks stay fixed. Received: "
                f"end_step={end_step!r}"
            )
        if not _is_int(seed):
            raise ValueError(
                f"Argument `seed` must be an integer. Received: seed={seed!r}"
            )
        self.update_frequency = int(update_frequency)
        self.drop_fraction = float(drop_fraction)
        self.end_step = int(end_step)
        self.seed = int(seed)

    def check_schedule(self, schedule):
        """Raises unless `schedule` is a `ConstantSparsity` that begins
        before `end_step`."""
        from keras_sparsity.schedules import ConstantSparsity

        if not isinstance(schedule, ConstantSparsity):
            raise ValueError(
                f"{type(self).__name__} trains at a constant sparsity: pass "
                "`pruning_schedule=ConstantSparsity(target, begin_step=0)`. "
                f"Received: pruning_schedule={schedule!r}"
            )
        if self.end_step <= schedule.begin_step:
            raise ValueError(
                f"Argument `end_step` of {type(self).__name__} must lie after "
                f"the schedule's begin_step={schedule.begin_step}. Received: "
                f"end_step={self.end_step}"
            )

    def updates_at(self, step, begin_step):
        """Whether `step` is a drop-and-grow step (a Python bool for an int
        step, else a boolean tensor)."""
        if isinstance(step, int):
            return (
                begin_step < step < self.end_step
                and (step - begin_step) % self.update_frequency == 0
            )
        step = ops.cast(step, "int32")
        return ops.logical_and(
            ops.logical_and(
                ops.greater(step, begin_step), ops.less(step, self.end_step)
            ),
            ops.equal(ops.mod(step - begin_step, self.update_frequency), 0),
        )

    def drop_fraction_at(self, step, begin_step):
        """`f(t)`: the cosine-decayed drop fraction at `step` (a float32
        tensor; 0 from `end_step` on)."""
        span = float(self.end_step - begin_step)
        progress = ops.clip(
            (ops.cast(step, "float32") - float(begin_step)) / span, 0.0, 1.0
        )
        return self.drop_fraction * 0.5 * (1.0 + ops.cos(math.pi * progress))

    def grow_scores(self, gradient, random):
        """Non-negative scores of the inactive weights: the highest grow."""
        return random

    def get_config(self):
        return {
            "update_frequency": self.update_frequency,
            "drop_fraction": self.drop_fraction,
            "end_step": self.end_step,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="keras_sparsity")
class SET(Regrowth):
    """Sparse Evolutionary Training (Mocanu et al., 2018): drops the
    smallest active weights, grows as many inactive ones at random.

    Example:

    ```python
    pruned = sparsity.prune_low_magnitude(
        model, sparsity.ConstantSparsity(0.9, begin_step=0),
        allocation="erk",
        regrowth=sparsity.SET(update_frequency=100, end_step=7500))
    ```
    """


@keras.saving.register_keras_serializable(package="keras_sparsity")
class RigL(Regrowth):
    """Rigged Lottery (Evci et al., 2020): drops the smallest active
    weights, grows the inactive ones whose gradient is largest.

    The gradient is that of the update step's batch, for the kernel as it
    is (zeros at inactive positions). Arguments as `SET`.
    """

    grows_by_gradient = True

    def grow_scores(self, gradient, random):
        return ops.abs(ops.cast(gradient, "float32"))


@keras.saving.register_keras_serializable(package="keras_sparsity")
class StaticSparse(Regrowth):
    """A random mask at `begin_step`, never changed: the baseline dynamic
    sparse training is measured against.

    Args:
        seed: Int, for the random masks.
    """

    def __init__(self, seed=0):
        super().__init__(update_frequency=1, drop_fraction=0.5, end_step=0,
                         seed=seed)

    def check_schedule(self, schedule):
        from keras_sparsity.schedules import ConstantSparsity

        if not isinstance(schedule, ConstantSparsity):
            raise ValueError(
                "StaticSparse trains at a constant sparsity: pass "
                "`pruning_schedule=ConstantSparsity(target, begin_step=0)`. "
                f"Received: pruning_schedule={schedule!r}"
            )

    def updates_at(self, step, begin_step):
        return False if isinstance(step, int) else ops.convert_to_tensor(False)

    def get_config(self):
        return {"seed": self.seed}


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def new_mask(regrowth, units, sparsity, step, begin_step, salt):
    """One kernel's next mask, on its units (weights or blocks).

    Args:
        regrowth: The `Regrowth`.
        units: Dict of float32 tensors of one shape: `old` (the mask, 0/1),
            `magnitude` (of the masked kernel) and, for RigL, `gradient`.
        sparsity: The kernel's sparsity (a float32 scalar).
        step: The optimizer step (int or int32 tensor).
        begin_step: The schedule's `begin_step`.
        salt: Int, distinguishes kernels in the random stream.

    Returns:
        The new 0/1 float32 mask over the units: a random one if `old` is
        all ones (not yet sparse), else `old` with its `d` weakest units
        dropped and `d` inactive ones grown.
    """
    old = units["old"]
    shape = old.shape
    size = math.prod(shape)
    flat_old = ops.reshape(old, (-1,))
    kept = mask_math.keep_count(size, sparsity)

    def initial():
        random = uniform(regrowth.seed, step, salt, size)
        return mask_math.top_k_scores(random, kept)

    def moved():
        return _moved(regrowth, units, flat_old, kept, step, begin_step, salt)

    # Two branches, so that each step computes one of them (and a step that
    # updates nothing, neither: the caller's `cond` skips this function).
    new = ops.cond(ops.equal(ops.min(flat_old), 1.0), initial, moved)
    return ops.reshape(new, shape)


def _moved(regrowth, units, flat_old, kept, step, begin_step, salt):
    """`flat_old` with its `d` weakest active units dropped and `d`
    inactive ones grown."""
    size = flat_old.shape[0]
    active = ops.greater(flat_old, 0.0)
    fraction = regrowth.drop_fraction_at(step, begin_step)
    due = regrowth.updates_at(step, begin_step)
    if isinstance(due, bool):
        fraction = fraction if due else ops.zeros((), "float32")
    else:
        fraction = ops.where(due, fraction, 0.0)
    dropped = ops.minimum(
        ops.cast(ops.floor(fraction * ops.cast(kept, "float32")), "int32"),
        size - kept,
    )
    magnitude = ops.reshape(units["magnitude"], (-1,))
    survivors = mask_math.top_k_scores(
        ops.where(active, magnitude, -1.0), kept - dropped
    )
    gradient = units.get("gradient")
    if gradient is not None:
        gradient = ops.reshape(gradient, (-1,))
    random = None
    if not regrowth.grows_by_gradient:
        random = uniform(regrowth.seed, step, salt, size)
    # Candidates are the inactive units (survivors are active, so the
    # `maximum` changes nothing): written through `survivors` because two
    # independent selections in one branch cost JAX's MLP step 1.6x at steps
    # that run neither (XLA on CPU); one after the other, 0.99x.
    inactive = ops.equal(ops.maximum(flat_old, survivors), 0.0)
    grown = mask_math.top_k_scores(
        ops.where(inactive, regrowth.grow_scores(gradient, random), -1.0),
        dropped,
    )
    return ops.maximum(survivors, grown)


def kernel_salt(ordinal, wrapper, index):
    """A stable int per kernel for the random stream: from the kernel's
    place among the optimizer's pruned kernels (`ordinal`), its wrapper's
    name and its own. Not from `variable.path`, which holds the model's
    name in a model built in code and not in the same model loaded from a
    file (nor in a second unnamed model, `sequential_1/...`): a run resumed
    from a `.keras` checkpoint would grow other weights."""
    name = wrapper.pruned_weights[index].name
    key = f"{ordinal}/{wrapper.name}/{name}"
    return zlib.crc32(key.encode()) & 0x7FFFFFF


def uniform(seed, step, salt, size):
    """`size` float32 numbers in [0, 1), a hash of (seed, step, salt,
    position): the same on every backend and under every compiler."""
    step = ops.cast(step, "int32")
    base = _hash(_hash(ops.convert_to_tensor(seed, "int32") + _GOLDEN) + step)
    base = _hash(base + salt)
    bits = _hash(ops.arange(size, dtype="int32") + base)
    return ops.cast(_shift_right(bits, 8), "float32") / float(1 << 24)


def _int32(constant):
    return constant - (1 << 32) if constant >= 1 << 31 else constant


_GOLDEN = _int32(0x9E3779B9)
_MULTIPLIERS = (_int32(0x7FEB352D), _int32(0x846CA68B))


def _shift_right(x, bits):
    """Logical right shift of int32 `x`."""
    return ops.bitwise_and(ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def _hash(x):
    """A 32-bit integer mix (xor-shift-multiply), wrapping in int32."""
    x = ops.cast(x, "int32")
    x = ops.bitwise_xor(x, _shift_right(x, 16))
    x = x * _MULTIPLIERS[0]
    x = ops.bitwise_xor(x, _shift_right(x, 15))
    x = x * _MULTIPLIERS[1]
    return ops.bitwise_xor(x, _shift_right(x, 16))
