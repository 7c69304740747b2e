"""Pruning schedules: map an optimizer step to `(should_prune, sparsity)`.

A schedule is evaluated inside the optimizer update, so it is written in
`keras.ops` and traces under `jit` on every backend. The step it receives is
the number of optimizer updates applied before the current one (the first
update sees step 0).
"""

import abc
import math
import numbers

import keras
from keras import ops

from keras_sparsity.configurable import Configurable


def _check_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer number of optimizer "
            f"steps. Received: {name}={value!r} "
            f"(of type {type(value).__name__})"
        )


def _check_sparsity(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a float in [0, 1), e.g. 0.8 to zero "
            f"80% of each weight. Received: {name}={value!r}"
        )
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} must be in range [0,1): a float in [0, 1), e.g. 0.8 to "
            f"zero 80% of each weight. Received: {name}={value!r}"
        )


def _check_steps(begin_step, end_step, frequency):
    _check_int("begin_step", begin_step)
    _check_int("end_step", end_step)
    _check_int("frequency", frequency)
    if begin_step < 0:
        raise ValueError(
            f"begin_step should be >= 0. Received: begin_step={begin_step}"
        )
    if end_step != -1 and end_step < 0:
        raise ValueError(
            f"end_step can be -1 or >= 0. Received: end_step={end_step}"
        )
    if end_step != -1 and end_step < begin_step:
        raise ValueError(
            "begin_step should be <= end_step if end_step != -1. Received: "
            f"begin_step={begin_step}, end_step={end_step}"
        )
    if frequency <= 0:
        raise ValueError(
            f"frequency should be > 0. Received: frequency={frequency}"
        )


class PruningSchedule(Configurable, abc.ABC):
    """Decides at which optimizer steps masks are updated, and to what sparsity.

    Subclasses implement `__call__(step)`, returning a boolean scalar tensor
    (update the masks at this step?) and a float32 scalar tensor (the target
    fraction of zeros), computed with `keras.ops` so that the schedule runs
    inside a compiled train step. Subclasses also implement `get_config()`,
    returning the constructor arguments. Register a custom schedule with
    `@keras.saving.register_keras_serializable()` to load saved models that
    use it without a custom-object scope.

    Example:

    ```python
    @keras.saving.register_keras_serializable()
    class EveryStep(sparsity.PruningSchedule):
        def __init__(self, target):
            self.target = target

        def __call__(self, step):
            return ops.greater_equal(step, 0), ops.convert_to_tensor(
                self.target, "float32")

        def get_config(self):
            return {"target": self.target}
    ```
    """

    @abc.abstractmethod
    def __call__(self, step):
        """Returns `(should_prune, sparsity)` for an integer step tensor."""

    @abc.abstractmethod
    def get_config(self):
        """Returns the constructor arguments as a flat dict."""

    @staticmethod
    def _should_prune_in_step(step, begin_step, end_step, frequency):
        """True on `begin_step + i * frequency` and on `end_step` itself.

        Unlike TFMOT, `end_step` always prunes, so the final sparsity is
        reached even when `(end_step - begin_step) % frequency != 0`.
        """
        step = ops.cast(step, "int32")
        started = ops.greater_equal(step, begin_step)
        on_frequency = ops.equal(ops.mod(step - begin_step, frequency), 0)
        if end_step == -1:
            return ops.logical_and(started, on_frequency)
        in_range = ops.logical_and(started, ops.less_equal(step, end_step))
        at_end = ops.equal(step, end_step)
        return ops.logical_and(in_range, ops.logical_or(on_frequency, at_end))


@keras.saving.register_keras_serializable(package="keras_sparsity")
class ConstantSparsity(PruningSchedule):
    """Prunes to one fixed sparsity every `frequency` steps.

    Masks are updated at `begin_step`, `begin_step + frequency`, ... up to
    `end_step` (included; `-1` means never stop).

    Args:
        target_sparsity: Float in [0, 1). Fraction of each weight set to
            zero.
        begin_step: Int >= 0. Optimizer step of the first mask update.
        end_step: Int, `-1` or >= `begin_step`. Step of the last update.
        frequency: Int > 0. Steps between mask updates.

    Example: `schedule = sparsity.ConstantSparsity(0.5, begin_step=0)`
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        _check_steps(begin_step, end_step, frequency)
        _check_sparsity("target_sparsity", target_sparsity)
        self.target_sparsity = float(target_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    def __call__(self, step):
        should_prune = self._should_prune_in_step(
            step, self.begin_step, self.end_step, self.frequency
        )
        return should_prune, ops.convert_to_tensor(
            self.target_sparsity, "float32"
        )

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="keras_sparsity")
class PolynomialDecay(PruningSchedule):
    """Raises sparsity from `initial_sparsity` to `final_sparsity` gradually.

    Between `begin_step` and `end_step` (optimizer steps) the sparsity is
    `final + (initial - final) * (1 - progress) ** power`, the gradual
    schedule of Zhu & Gupta (2017), "To prune, or not to prune". Masks are
    updated every `frequency` steps from `begin_step` on and always at
    `end_step`, so `final_sparsity` is reached even when `frequency` does not
    divide `end_step - begin_step`. With `begin_step == end_step` the
    sparsity jumps to `final_sparsity` at that step.

    Args:
        initial_sparsity: Float in [0, 1). Sparsity at `begin_step`.
        final_sparsity: Float in [0, 1). Sparsity from `end_step` on.
        begin_step: Int >= 0. Optimizer step of the first mask update.
        end_step: Int >= `begin_step`. Step of the last update.
        power: Finite number > 0. Exponent of the curve; 3 prunes fast
            early on, 1 is linear.
        frequency: Int > 0. Steps between mask updates.

    Example:

    ```python
    schedule = sparsity.PolynomialDecay(
        initial_sparsity=0.5, final_sparsity=0.8, begin_step=0, end_step=1000)
    ```
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        _check_steps(begin_step, end_step, frequency)
        if end_step == -1:
            raise ValueError(
                "end_step cannot be -1: PolynomialDecay needs the step at "
                "which `final_sparsity` is reached. Received: end_step=-1"
            )
        _check_sparsity("initial_sparsity", initial_sparsity)
        _check_sparsity("final_sparsity", final_sparsity)
        if isinstance(power, bool) or not isinstance(power, numbers.Real):
            raise TypeError(
                f"Argument `power` must be a number, e.g. 3. "
                f"Received: power={power!r}"
            )
        if not (math.isfinite(power) and power > 0):
            # power <= 0 makes `(1 - progress) ** power` 1 or inf at
            # `end_step` (sparsity -inf); NaN propagates to every step.
            raise ValueError(
                "Argument `power` must be a finite number > 0, e.g. 3 (the "
                "TFMOT default) to prune fast early on, or 1 for a linear "
                f"ramp. Received: power={power!r}"
            )
        self.initial_sparsity = float(initial_sparsity)
        self.final_sparsity = float(final_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.power = power
        self.frequency = int(frequency)

    def __call__(self, step):
        step = ops.cast(step, "int32")
        if self.end_step == self.begin_step:
            progress = ops.cast(
                ops.greater_equal(step, self.end_step), "float32"
            )
        else:
            progress = ops.cast(step - self.begin_step, "float32") / float(
                self.end_step - self.begin_step
            )
            progress = ops.clip(progress, 0.0, 1.0)
        remaining = ops.power(1.0 - progress, float(self.power))
        sparsity = (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity) * remaining
        )
        should_prune = self._should_prune_in_step(
            step, self.begin_step, self.end_step, self.frequency
        )
        return should_prune, ops.cast(sparsity, "float32")

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }
