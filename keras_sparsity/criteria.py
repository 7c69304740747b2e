"""Criteria: how weights are scored for pruning; the highest scores stay.

A criterion turns a kernel (and, for criteria that look at the loss, its
gradients) into one score per weight. `SparsityOptimizer` calls `update`
once per optimizer step, before the inner optimizer changes the weights,
and `score` when a mask is due; the pattern and the allocation then keep
the highest-scoring weights (or blocks, or N:M groups).

* `Magnitude`: `|w|` (TFMOT's criterion; the default).
* `Saliency`: `|w * g|`, the first-order estimate of the change in loss
  when a weight is removed, as an exponential moving average over steps.
* `Movement`: `-sum(w * g)` over the steps, the movement-pruning score of
  Sanh et al. (2020): weights moving away from zero score high, whatever
  their magnitude.

Weights pruned once stay pruned: a weight whose mask is 0 is ranked below
every weight still kept, whatever its score.
"""

import keras
from keras import ops

from keras_sparsity.configurable import Configurable


class Criterion(Configurable):
    """Base class of pruning criteria: subclass it for a criterion of yours.

    A criterion may keep a state per kernel (a float32 tensor of the
    kernel's shape, starting at zero), which `SparsityOptimizer` stores as
    one of its variables, so it is saved with the optimizer and carried by
    every backend's train step.

    Class attributes:
        stateful: True if `update` keeps a state (and needs gradients).
        signed: True if scores may be negative. Scores of a signed
            criterion are ranked by value (they are shifted by their
            minimum before ranking); others must be non-negative.

    Override `score(state, weight)` (and `update(state, weight,
    gradient)` for a stateful criterion) with `keras.ops`, and
    `get_config()` if the constructor takes arguments. Register the class
    with `@keras.saving.register_keras_serializable()` so that saved models
    load.

    Example:

    ```python
    @keras.saving.register_keras_serializable()
    class SquaredGradient(sparsity.Criterion):
        stateful = True

        def update(self, state, weight, gradient):
            return state + ops.square(gradient)

        def score(self, state, weight):
            return ops.abs(weight) * ops.sqrt(state)
    ```
    """

    stateful = False
    signed = False

    def __init__(self):
        """Takes no arguments, so that a misspelt one is named in the
        `TypeError` (a class without `__init__` only says "takes no
        arguments")."""

    def update(self, state, weight, gradient):
        """The state after one optimizer step (called before the weights
        change). Float32 tensors of the kernel's shape."""
        return state

    def score(self, state, weight):
        """One float32 score per weight of the (masked) kernel `weight`;
        `state` is None for a criterion that is not stateful."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `score(state, weight)`."
        )


@keras.saving.register_keras_serializable(package="keras_sparsity")
class Magnitude(Criterion):
    """`|w|`: keeps the largest weights (TFMOT's criterion)."""

    def score(self, state, weight):
        return ops.abs(ops.cast(weight, "float32"))


@keras.saving.register_keras_serializable(package="keras_sparsity")
class Saliency(Criterion):
    """`|w * g|` averaged over steps: keeps the weights whose removal would
    change the loss most, to first order (Molchanov et al., 2019).

    Args:
        decay: Float in [0, 1), the weight of the past in the exponential
            moving average of `|w * g|` (0 scores by the last step only).
    """

    stateful = True

    def __init__(self, decay=0.9):
        if isinstance(decay, bool) or not (
            isinstance(decay, (int, float)) and 0 <= decay < 1
        ):
            raise ValueError(
                "Argument `decay` must be a float in [0, 1). "
                f"Received: decay={decay!r}"
            )
        self.decay = float(decay)

    def update(self, state, weight, gradient):
        product = ops.abs(
            ops.cast(weight, "float32") * ops.cast(gradient, "float32")
        )
        return self.decay * state + (1.0 - self.decay) * product

    def score(self, state, weight):
        return state

    def get_config(self):
        return {"decay": self.decay}


@keras.saving.register_keras_serializable(package="keras_sparsity")
class Movement(Criterion):
    """`-sum(w * g)` over the steps: keeps the weights that training moves
    away from zero (Sanh et al., 2020, movement pruning), which beats
    magnitude when fine-tuning pretrained models to high sparsity."""

    stateful = True
    signed = True

    def update(self, state, weight, gradient):
        return state - ops.cast(weight, "float32") * ops.cast(
            gradient, "float32"
        )

    def score(self, state, weight):
        return state


_BY_NAME = {"magnitude": Magnitude, "saliency": Saliency, "movement": Movement}


def get(criterion):
    """A `Criterion` from a name (`"magnitude"`, `"saliency"`,
    `"movement"`), an instance, or a serialized config."""
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str) and criterion in _BY_NAME:
        return _BY_NAME[criterion]()
    if isinstance(criterion, dict):
        try:
            found = keras.saving.deserialize_keras_object(criterion)
        except (TypeError, ValueError) as error:
            # A TypeError, as Keras raises for an unknown class: loading a
            # model keeps telling a missing custom class apart.
            raise TypeError(
                "Argument `criterion` is a config that does not load "
                f"({error}). Received: criterion={criterion!r}"
            ) from None
        if isinstance(found, Criterion):
            return found
    raise ValueError(
        "Argument `criterion` must be 'magnitude', 'saliency', 'movement' or "
        "a `keras_sparsity.Criterion` instance. Received: "
        f"criterion={criterion!r}"
    )


def ranked_scores(criterion, states, weights, masks):
    """Scores ready for ranking, for one group of kernels ranked together:
    non-negative where the mask is 1, -1 (below all) where it is 0.

    A signed criterion's scores are shifted by their minimum over the kept
    weights of the whole group, so that kernels ranked together keep their
    order.
    """
    scores = [
        ops.cast(criterion.score(state, weight), "float32")
        for state, weight in zip(states, weights)
    ]
    kept = [ops.greater(mask, 0.0) for mask in masks]
    if criterion.signed:
        lowest = ops.min(
            ops.stack(
                [
                    ops.min(ops.where(k, s, float("inf")))
                    for s, k in zip(scores, kept)
                ]
            )
        )
        scores = [s - lowest for s in scores]
    else:
        scores = [ops.maximum(s, 0.0) for s in scores]
    return [ops.where(k, s, -1.0) for s, k in zip(scores, kept)]
