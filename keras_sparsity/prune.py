"""The TFMOT workflow: `prune_low_magnitude`, `strip_pruning`, `prune_scope`.

Models are never edited in place. Sequential and functional models are
cloned (`keras.models.clone_model`, nested models included) into fresh
layers with the weights copied; subclassed models are rebuilt from their
config, given the weights, and their sublayers swapped in the copy
(`surgery`). The user's model keeps its layers, variables and optimizer
whatever happens to the copy.
"""

import warnings

import keras
import numpy as np

from keras_sparsity import registry
from keras_sparsity import surgery
from keras_sparsity.callbacks import pruning_wrappers
from keras_sparsity.wrapper import PruneLowMagnitude
from keras_sparsity.wrapper import check_layer
from keras_sparsity.wrapper import check_pruning_params


def is_graph_model(model):
    """True for Sequential and Functional models (which can be cloned)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def _fresh_copy(layer):
    return layer.__class__.from_config(layer.get_config())


def _clone(model, clone_layer):
    """Clones `model`, layer by layer, with `clone_layer`.

    `clone_layer(layer)` returns `(new_layer, weights, target)`: once the
    clone is built, the list of arrays `weights` (unless None) is written
    into `target` (`new_layer` itself, or the layer inside a new wrapper).
    """
    pending = []

    def clone_function(layer):
        new_layer, weights, target = clone_layer(layer)
        if weights is not None and layer.built:
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
        to_prune: A `keras.layers.Layer`, a list of layers, or a
            `keras.Model`: Sequential, functional or subclassed (which
            must be built and rebuildable from its `get_config()`).
        pruning_schedule: A `PruningSchedule`. Defaults to
            `ConstantSparsity(0.5, begin_step=0)`.
        block_size: Pair of ints, the (rows, columns) of the blocks pruned
            together, each kernel read as a matrix of (reduction axes,
            output axes). `(1, 1)` prunes single weights.
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
            (
                "pruning_schedule",
                "block_size",
                "block_pooling_type",
                "sparsity_m_by_n",
            ),
            check_pruning_params(
                pruning_schedule,
                block_size,
                block_pooling_type,
                sparsity_m_by_n,
            ),
        )
    )
    if isinstance(to_prune, keras.Model):
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)
        return _Pruner(params, pruning_policy, strict).prune(to_prune)
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
            layer
            if isinstance(layer, PruneLowMagnitude)
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


class _Pruner:
    """Builds the pruned copy of a model of any kind, nested ones included."""

    def __init__(self, params, policy, strict):
        self.params = params
        self.policy = policy
        self.strict = strict
        self.skipped = []

    def prune(self, model):
        pruned = self._model(model)
        if self.skipped:
            warnings.warn(
                "prune_low_magnitude left these layers unpruned because "
                f"their type is not supported: {', '.join(self.skipped)}. "
                "Implement `PrunableLayer` in a custom layer to prune it.",
                stacklevel=3,
            )
        return pruned

    def _model(self, model):
        if is_graph_model(model):
            return _clone(model, self._clone_layer)
        copy = surgery.rebuilt_copy(model, "to_prune")
        copy.set_weights(model.get_weights())
        self._swap_children(copy, {})
        return copy

    def _wants(self, layer):
        return registry.is_prunable(layer) and (
            self.policy is None or self.policy.allow_pruning(layer)
        )

    def _note_skipped(self, layer):
        if registry.has_nothing_to_prune(layer) or self.policy is not None:
            return
        if self.strict:
            check_layer(layer)  # raises: the copy is dropped, the model kept
        self.skipped.append(f"{layer.name} ({type(layer).__name__})")

    def _clone_layer(self, layer):
        if not isinstance(layer, keras.layers.Layer):  # keras.ops in a graph
            return layer, None, None
        if isinstance(layer, keras.Model):  # a subclassed model inside
            return (self._model(layer),) + (None, None)
        weights = layer.get_weights()
        if isinstance(layer, PruneLowMagnitude):
            copy = _fresh_copy(layer)
            return copy, weights, copy
        copy = _fresh_copy(layer)
        if self._wants(layer):
            return PruneLowMagnitude(copy, **self.params), weights, copy
        self._note_skipped(layer)
        return copy, weights, copy

    def _swap_children(self, parent, done):
        """Wraps the prunable sublayers of a subclassed model's copy."""
        for child in surgery.children(parent):
            if isinstance(child, PruneLowMagnitude):
                continue
            if id(child) in done:
                surgery.replace(parent, child, done[id(child)])
            elif isinstance(child, keras.Model) and is_graph_model(child):
                done[id(child)] = self._model(child)
                surgery.replace(parent, child, done[id(child)])
            elif not isinstance(child, keras.Model) and self._wants(child):
                wrapper = PruneLowMagnitude(child, **self.params)
                wrapper.build()
                done[id(child)] = wrapper
                surgery.replace(parent, child, wrapper)
            elif surgery.children(child):
                self._swap_children(child, done)
            else:
                self._note_skipped(child)


def unpruned_layers(model):
    """Layers of `model` that hold kernels but are not pruned.

    Lists the layers `prune_low_magnitude` skipped (unsupported types) and
    those a `pruning_policy` excluded; nested models are searched too.

    Example: `print([l.name for l in sparsity.unpruned_layers(pruned)])`
    """
    wrapped = {
        id(inner)
        for wrapper in pruning_wrappers(model)
        for inner in wrapper._flatten_layers(include_self=False)
    }
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if not isinstance(layer, (keras.Model, PruneLowMagnitude))
        and id(layer) not in wrapped
        and not registry.has_nothing_to_prune(layer)
    ]


def strip_pruning(model):
    """Returns a copy of a pruned model made of plain Keras layers.

    Each `PruneLowMagnitude` is replaced by a fresh copy of its layer whose
    pruned weights are exactly `weight * mask`; other layers are copied
    with their weights. The result has the unpruned model's config, shares
    no variables with `model`, needs nothing from this library to load,
    and, if `model` was compiled, is compiled the same way with a fresh
    optimizer.

    Args:
        model: A pruned `keras.Model` (Sequential, functional or
            subclassed), or a single `PruneLowMagnitude` layer.

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
    return _strip_model(model)


def _strip_model(model):
    if is_graph_model(model):
        return _clone(model, _strip_layer)
    copy = surgery.rebuilt_copy(model, "model")
    _transfer_stripped(model, copy)
    return copy


def _strip_layer(layer):
    if not isinstance(layer, keras.layers.Layer):  # keras.ops in a graph
        return layer, None, None
    if isinstance(layer, keras.Model):
        return _strip_model(layer), None, None
    if isinstance(layer, PruneLowMagnitude):
        copy = _fresh_copy(layer.layer)
        return copy, _masked_weights(layer), copy
    copy = _fresh_copy(layer)
    return copy, layer.get_weights(), copy


def _transfer_stripped(source, target):
    """Writes a pruned subclassed model's weights into its plain rebuild."""
    for value, variable in zip(
        surgery.own_weights(source), surgery.own_weights(target)
    ):
        variable.assign(value)
    for child, plain in zip(surgery.children(source), surgery.children(target)):
        if isinstance(child, PruneLowMagnitude):
            plain.set_weights(_masked_weights(child))
        elif is_graph_model(child):
            plain.set_weights(_strip_model(child).get_weights())
        else:
            _transfer_stripped(child, plain)


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
