"""Keras callbacks of the TFMOT workflow."""

import warnings

import keras

from keras_sparsity.wrapper import PruneLowMagnitude


def pruning_wrappers(model):
    """Every `PruneLowMagnitude` layer in `model`, nested models included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, PruneLowMagnitude)
    ]


class UpdatePruningStep(keras.callbacks.Callback):
    """Accepted for drop-in compatibility with TFMOT; pruning needs no callback.

    In TFMOT this callback advanced a per-layer step counter and training
    failed without it. Here the schedule follows `optimizer.iterations` and
    masks are applied inside the optimizer step, so training prunes the
    same with or without this callback. It only checks, when training
    starts, that the model contains pruned layers, and warns otherwise.

    Example: `pruned.fit(x, y, callbacks=[sparsity.UpdatePruningStep()])`
    """

    def on_train_begin(self, logs=None):
        if not pruning_wrappers(self.model):
            warnings.warn(
                "UpdatePruningStep: the model being trained has no pruned "
                "layers; did you pass the original model instead of the "
                "one `prune_low_magnitude` returned?",
                stacklevel=2,
            )
