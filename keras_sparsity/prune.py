"""The TFMOT workflow: `prune_low_magnitude`, `strip_pruning`, `prune_scope`.

Models are never edited in place: pruning and stripping clone the model
(`keras.models.clone_model`, nested models included) into fresh layers and
copy the weights, so the user's model keeps its layers, variables and
optimizer whatever happens to the copy.
"""

import warnings

import keras
import numpy as np

from keras_sparsity import registry
from keras_sparsity.wrapper import PruneLowMagnitude
from keras_sparsity.wrapper import check_layer
from keras_sparsity.wrapper import check_pruning_params


def _is_graph_model(model):
    """True for Sequential and Functional models (which can be cloned)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def _check_graph_model(model, argument):
    """Raises for subclassed models, at any depth, before anything changes."""
    if not _is_graph_model(model):
        raise ValueError(
            f"`{argument}` supports keras.Sequential and functional "
            "keras.Model objects (nested ones included); subclassed models "
            f"are not supported yet. Received: {argument}="
            f"{type(model).__name__} instance named {model.name!r}"
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _check_graph_model(layer, argument)


def _fresh_copy(layer):
    return layer.__class__.from_config(layer.get_config())


def _clone(model, clone_layer):
    """Clones `model`, layer by layer, with `clone_layer`.

    `clone_layer(layer)` returns `(new_layer, weights, target)`: once the
    clone is built, the list of arrays `weights` is written into `target`
    (`new_layer` itself, or the layer inside a new wrapper).
    """
    pending = []

    def clone_function(layer):
        new_layer, weights, target = clone_layer(layer)
        if layer.built:
            pending.append((target, weights))
        return new_layer

    clone = keras.models.clone_model(
        model,
        input_tensors=_named_inputs(model),
        clone_function=clone_function,
        recursive=True,
    )
    for target, weights in pending:
        target.set_weights(weights)
    return clone


def _named_inputs(model):
    """New inputs for a functional clone, named after the input layers.

    `clone_model` names them after the input tensors ("keras_tensor"),
    which would change the model's config.
    """
    if isinstance(model, keras.Sequential):
        return None
    layers = {
        id(layer.output): layer
        for layer in model.layers
        if isinstance(layer, keras.layers.InputLayer)
    }
    return keras.tree.map_structure(
        lambda x: keras.Input(
            batch_shape=x.shape,
            dtype=x.dtype,
            sparse=x.sparse,
            name=layers[id(x)].name if id(x) in layers else x.name,
        ),
        model.input,
    )


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    pruning_policy=None,
    sparsity_m_by_n=None,
    *,
    strict=False,
    **kwargs,
):
    """Wraps a layer, a list of layers or a model for magnitude pruning.

    The returned layers keep a 0/1 mask per kernel. Masks follow
    `pruning_schedule`, counted in optimizer steps, and after every
    optimizer step the pruned weights are exactly zero. Training needs no
    callback (`UpdatePruningStep` is accepted and harmless), and works with
    `fit` and with custom loops on every backend.

    For a `keras.Sequential` or functional `keras.Model` (nested models
    included) a pruned copy is returned: every layer with prunable kernels
    is wrapped in `PruneLowMagnitude`; layers without kernels (pooling,
    dropout, normalization, merges...) are copied as they are; layers with
    kernels of an unsupported type are copied unpruned, with a warning
    (`unpruned_layers(model)` lists them), or raise with `strict=True`. The
    copy holds the model's current weights; the original model is not
    changed. A compiled model's copy is compiled the same way, with a fresh
    optimizer (so the schedule starts at step 0); compile it again to
    change settings.

    Args:
        to_prune: A `keras.layers.Layer`, a list of layers, a
            `keras.Sequential` or a functional `keras.Model`.
        pruning_schedule: A `PruningSchedule`. Defaults to
            `ConstantSparsity(0.5, begin_step=0)`.
        block_size: Pair of ints, the (rows, columns) of the blocks pruned
            together in each kernel's 2-D view. `(1, 1)` prunes single
            weights.
        block_pooling_type: `"AVG"` or `"MAX"`, how a block is scored.
        pruning_policy: Optional object with `allow_pruning(layer)` and
            `ensure_model_supports_pruning(model)`; only for models.
        sparsity_m_by_n: `None` or `(m, n)`: m zeros in every n consecutive
            weights along each kernel's input axis.
        strict: If True, a layer with kernels of an unsupported type in a
            model is an error instead of a warning.
        **kwargs: Passed to each `PruneLowMagnitude` (layers only).

    Returns:
        A `PruneLowMagnitude` layer, a list of layers, or a pruned model.

    Example:

    ```python
    schedule = sparsity.PolynomialDecay(0.5, 0.8, begin_step=0, end_step=1000)
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, callbacks=[sparsity.UpdatePruningStep()])
    ```
    """
    params = dict(
        zip(
            ("pruning_schedule", "block_size", "block_pooling_type",
             "sparsity_m_by_n"),
            check_pruning_params(
                pruning_schedule, block_size, block_pooling_type,
                sparsity_m_by_n,
            ),
        )
    )
    if isinstance(to_prune, keras.Model):
        _check_graph_model(to_prune, "to_prune")
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)
        return _prune_model(to_prune, params, pruning_policy, strict)
    if pruning_policy is not None:
        raise ValueError(
            "Argument `pruning_policy` applies to whole models only; to "
            "prune single layers, choose them yourself. Received: "
            f"pruning_policy={pruning_policy!r} with to_prune of type "
            f"{type(to_prune).__name__}"
        )
    if isinstance(to_prune, (list, tuple)):
        for layer in to_prune:
            if not isinstance(layer, PruneLowMagnitude):
                check_layer(layer)
        return [
            layer if isinstance(layer, PruneLowMagnitude)
            else PruneLowMagnitude(layer, **params, **kwargs)
            for layer in to_prune
        ]
    if isinstance(to_prune, keras.layers.Layer):
        return PruneLowMagnitude(to_prune, **params, **kwargs)
    raise ValueError(
        "`prune_low_magnitude` can only prune an object of the following "
        "types: keras.Sequential, a functional keras.Model, "
        "keras.layers.Layer, or a list of keras.layers.Layer. "
        f"Received: to_prune of type {type(to_prune).__name__}"
    )


def _prune_model(model, params, policy, strict):
    if strict:
        for layer in model._flatten_layers(include_self=False):
            if not isinstance(layer, keras.Model) and not isinstance(
                layer, PruneLowMagnitude
            ):
                check_layer(layer)
    skipped = []

    def clone_layer(layer):
        weights = layer.get_weights()
        if isinstance(layer, PruneLowMagnitude):
            copy = _fresh_copy(layer)
            return copy, weights, copy
        if registry.is_prunable(layer) and (
            policy is None or policy.allow_pruning(layer)
        ):
            inner = _fresh_copy(layer)
            return PruneLowMagnitude(inner, **params), weights, inner
        if not registry.has_nothing_to_prune(layer) and policy is None:
            skipped.append(f"{layer.name} ({type(layer).__name__})")
        copy = _fresh_copy(layer)
        return copy, weights, copy

    pruned = _clone(model, clone_layer)
    if skipped:
        warnings.warn(
            "prune_low_magnitude left these layers unpruned because their "
            f"type is not supported: {', '.join(skipped)}. Implement "
            "`PrunableLayer` in a custom layer to prune it.",
            stacklevel=3,
        )
    return pruned


def unpruned_layers(model):
    """Layers of `model` that hold kernels but are not pruned.

    Lists the layers `prune_low_magnitude` skipped (unsupported types) and
    those a `pruning_policy` excluded; nested models are searched too.

    Example: `print([l.name for l in sparsity.unpruned_layers(pruned)])`
    """
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if not isinstance(layer, (keras.Model, PruneLowMagnitude))
        and not _inside_wrapper(layer, model)
        and not registry.has_nothing_to_prune(layer)
    ]


def _inside_wrapper(layer, model):
    return any(
        layer is inner
        for wrapper in model._flatten_layers(include_self=False)
        if isinstance(wrapper, PruneLowMagnitude)
        for inner in wrapper._flatten_layers(include_self=False)
    )


def strip_pruning(model):
    """Returns a copy of a pruned model made of plain Keras layers.

    Each `PruneLowMagnitude` is replaced by a fresh copy of its layer whose
    pruned weights are exactly `weight * mask`; other layers are copied
    with their weights. The result has the unpruned model's config, shares
    no variables with `model`, needs nothing from this library to load,
    and, if `model` was compiled, is compiled the same way with a fresh
    optimizer.

    Args:
        model: A pruned `keras.Sequential` or functional `keras.Model`, or
            a single `PruneLowMagnitude` layer.

    Returns:
        A model (or layer) without pruning wrappers.

    Example: `final = sparsity.strip_pruning(pruned); final.save("m.keras")`
    """
    if isinstance(model, PruneLowMagnitude):
        layer = _fresh_copy(model.layer)
        if model.built:
            layer.build_from_config(model.layer.get_build_config())
            layer.set_weights(_masked_weights(model))
        return layer
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Expected `model` to be a keras.Model (or a PruneLowMagnitude "
            f"layer). Received: model of type {type(model).__name__}"
        )
    _check_graph_model(model, "model")

    def clone_layer(layer):
        if isinstance(layer, PruneLowMagnitude):
            copy = _fresh_copy(layer.layer)
            return copy, _masked_weights(layer), copy
        copy = _fresh_copy(layer)
        return copy, layer.get_weights(), copy

    return _clone(model, clone_layer)


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


def prune_scope():
    """A custom-object scope naming this library's classes (TFMOT parity).

    Saved pruned models load without it: every class is registered with
    Keras. It is kept so that code written for TFMOT runs unchanged.

    Example: `with sparsity.prune_scope(): model = keras.saving.load_model(p)`
    """
    return keras.saving.custom_object_scope(
        {"PruneLowMagnitude": PruneLowMagnitude}
    )
