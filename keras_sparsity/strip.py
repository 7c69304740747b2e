"""`strip_pruning`: a pruned model back to plain Keras layers."""

import keras
import numpy as np

from keras_sparsity import _compat
from keras_sparsity import checks
from keras_sparsity import cloning
from keras_sparsity import registry
from keras_sparsity import surgery
from keras_sparsity.engine import EngineGuard
from keras_sparsity.engine import plain_optimizer
from keras_sparsity.wrapper import PruneLowMagnitude


def strip_pruning(model, *, inplace=False):
    """Returns a pruned model made of plain Keras layers.

    Each `PruneLowMagnitude` is replaced by its layer, whose pruned weights
    are exactly `weight * mask`; other layers keep their weights. The
    result has the unpruned model's class and config, needs nothing from
    this library to load, and, if `model` was compiled, is compiled the
    same way with a fresh plain optimizer (the one `SparsityOptimizer`
    wrapped).

    Args:
        model: A pruned `keras.Model` of any kind, or a single
            `PruneLowMagnitude` layer.
        inplace: If True, unwrap the layers of `model` itself instead of
            returning a copy that shares no variables with it (for models
            too large to copy; not for plain Sequential/functional models).

    Returns:
        A model (or layer) without pruning wrappers.

    Example: `final = sparsity.strip_pruning(pruned); final.save("m.keras")`
    """
    checks.check_flag("inplace", inplace)
    if isinstance(model, PruneLowMagnitude):
        if inplace:
            raise ValueError(
                "Argument `inplace` applies to models only. Received: "
                "inplace=True with a PruneLowMagnitude layer"
            )
        layer = cloning.fresh_copy(model.layer)
        if model.built:
            layer.build_from_config(model.layer.get_build_config())
            layer.set_weights(_masked_weights(model))
        return layer
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Expected `model` to be a keras.Model (or a PruneLowMagnitude "
            f"layer). Received: model of type {type(model).__name__}"
        )
    if inplace:
        if _compat.is_plain_graph(model):
            raise ValueError(
                "`inplace=True` strips functional subclasses and subclassed "
                "models; a plain Sequential or functional model is always "
                "stripped as a copy. Received: inplace=True with model="
                f"{model.name!r}"
            )
        _unwrap_sublayers(model)
        model.__dict__.pop("compile", None)  # the engine's compile hook
        stripped = model
    else:
        stripped = _strip_model(model)
    if stripped.compiled:
        config = stripped.get_compile_config()
        config["optimizer"] = plain_optimizer(config["optimizer"])
        cloning.recompile(stripped, config)
    return stripped


def _strip_model(model):
    if _compat.is_plain_graph(model):
        return cloning.clone_graph(model, _strip_layer)
    copy = cloning.rebuilt_copy(model, "model")
    _transfer_stripped(model, copy)
    return copy


def _strip_layer(layer):
    if not isinstance(layer, keras.layers.Layer):  # keras.ops in a graph
        return layer, None
    if isinstance(layer, keras.Model):
        return _strip_model(layer), None
    if isinstance(layer, PruneLowMagnitude):
        copy = cloning.fresh_copy(layer.layer)
        weights = _masked_weights(layer)
        return copy, lambda: copy.set_weights(weights)
    copy = cloning.copy_or_share(layer)
    if copy is layer:
        return layer, None
    return copy, lambda: _transfer_stripped(layer, copy)


def _transfer_stripped(source, target):
    """Writes a pruned layer's weights into its plain copy, sublayer by
    sublayer (the copy was rebuilt from config, so it holds no wrappers)."""
    for value, variable in zip(
        registry.own_weights(source), registry.own_weights(target)
    ):
        variable.assign(keras.ops.copy(value))  # JAX would share the buffer
    for child, plain in zip(
        _compat.sublayers(source), _compat.sublayers(target)
    ):
        if isinstance(child, PruneLowMagnitude):
            plain.set_weights(_masked_weights(child))
        elif _compat.is_plain_graph(child):
            plain.set_weights(_strip_model(child).get_weights())
        else:
            _transfer_stripped(child, plain)


def _unwrap_sublayers(parent):
    for child in _compat.sublayers(parent):
        if isinstance(child, PruneLowMagnitude):
            for weight, value in zip(
                child.layer.weights, _masked_weights(child)
            ):
                weight.assign(value)
            for weight in child.pruned_weights:
                if isinstance(weight.constraint, EngineGuard):
                    weight.constraint = weight.constraint.inner
            surgery.replace(parent, child, child.layer)
        else:
            _unwrap_sublayers(child)


def _masked_weights(wrapper):
    """The wrapped layer's weights as arrays, pruned ones times their mask."""
    masked = {
        id(weight): mask
        for weight, mask in zip(wrapper.pruned_weights, wrapper.masks)
    }
    values = []
    for weight in wrapper.layer.weights:
        value = keras.ops.convert_to_numpy(weight)
        if id(weight) in masked:
            mask = keras.ops.convert_to_numpy(masked[id(weight)]) > 0
            value = np.where(mask, value, np.zeros_like(value))
        values.append(value)
    return values
