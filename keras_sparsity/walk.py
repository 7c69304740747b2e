"""Read-only walks over a model: its pruned layers and its unpruned kernels."""

import keras

from keras_sparsity import _compat
from keras_sparsity import registry
from keras_sparsity.wrapper import PruneLowMagnitude


def pruning_wrappers(model):
    """Every `PruneLowMagnitude` layer in `model`, at any depth, each once."""
    return [
        layer
        for layer in _compat.all_sublayers(model)
        if isinstance(layer, PruneLowMagnitude)
    ]


def unpruned_layers(model):
    """Layers of `model` that hold kernels but are not pruned.

    Lists the layers `prune_low_magnitude` skipped (unsupported types) and
    those a `pruning_policy` excluded, at any depth. A layer whose kernels
    all sit in pruned sublayers is not listed.

    Example: `print([l.name for l in sparsity.unpruned_layers(pruned)])`
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Argument `model` must be a keras.Model (or a layer). "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    wrapped = {
        id(inner)
        for wrapper in pruning_wrappers(model)
        for inner in [wrapper.layer] + _compat.all_sublayers(wrapper.layer)
    }
    return [
        layer
        for layer in _compat.all_sublayers(model)
        if not isinstance(layer, (keras.Model, PruneLowMagnitude))
        and id(layer) not in wrapped
        and registry.own_kernels(layer)
    ]
