"""Keras callbacks of the TFMOT workflow."""

import warnings

import keras

from keras_sparsity.engine import ensure_engine
from keras_sparsity.walk import pruning_wrappers


class UpdatePruningStep(keras.callbacks.Callback):
    """Makes sure the optimizer prunes; kept from TFMOT's workflow.

    In TFMOT this callback advanced a per-layer step counter and training
    failed without it. Here the schedule follows `optimizer.iterations` and
    masks are applied by `SparsityOptimizer` inside the optimizer step.
    Models returned by `prune_low_magnitude` get that optimizer when
    compiled and need no callback. For a model assembled from pruned
    layers and compiled with a plain optimizer, this callback wraps the
    optimizer when training starts. It warns if the model has no pruned
    layers.

    Example: `pruned.fit(x, y, callbacks=[sparsity.UpdatePruningStep()])`
    """

    def on_train_begin(self, logs=None):
        if pruning_wrappers(self.model):
            ensure_engine(self.model)
        else:
            warnings.warn(
                "UpdatePruningStep: the model being trained has no pruned "
                "layers; did you pass the original model instead of the "
                "one `prune_low_magnitude` returned?",
                stacklevel=2,
            )
