"""Copies of models and layers that keep the user's objects untouched.

Two ways to copy, by kind of model:

* plain Sequential and functional models are cloned layer by layer
  (`keras.models.clone_model`), each layer rebuilt from its config, with a
  hook that may return another layer (a wrapper) in its place;
* every other model (functional subclasses such as KerasHub backbones and
  tasks, subclassed models) is rebuilt as a whole from its own config, or
  with no arguments when its `__init__` takes none, so it keeps its class,
  its methods and the weights it ties; its sublayers are then edited in
  the copy (`surgery`).
"""

import inspect
import tempfile

import keras

from keras_sparsity import _compat


def fresh_copy(layer):
    """An unbuilt layer of the same class and config as `layer`."""
    try:
        return layer.__class__.from_config(layer.get_config())
    except Exception as error:  # a user's get_config can raise anything
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) cannot be copied "
            "from its config, which a pruned copy of its model needs: "
            f"{type(error).__name__}: {error}. Fix its `get_config()`, or "
            "prune a model of another kind in place (`inplace=True`)."
        ) from error


def copy_or_share(layer):
    """A fresh copy of a layer of a graph being cloned; a layer without
    weights whose config is broken is shared instead (sharing a stateless
    layer changes nothing for its owner)."""
    try:
        return fresh_copy(layer)
    except ValueError:
        if layer.weights:
            raise
        return layer


def built_copy(layer):
    """A copy of a built layer, built, holding the same weights."""
    copy = fresh_copy(layer)
    copy.build_from_config(layer.get_build_config())
    copy.set_weights(layer.get_weights())
    return copy


def copy_weights(source, target):
    """`target.set_weights(source.get_weights())`, one variable at a time,
    so that no second copy of the whole model is held in memory."""
    if len(source.weights) != len(target.weights):
        raise ValueError(
            f"{type(source).__name__} {source.name!r} rebuilt from its config "
            f"has {len(target.weights)} weights instead of "
            f"{len(source.weights)}: its `get_config()` does not describe "
            "it fully. Fix the config, or pass `inplace=True`."
        )
    for variable, value in zip(target.weights, source.weights):
        # A copy: JAX would otherwise share the buffer, and a jitted train
        # step of the copy donates (deletes) it under the source model.
        variable.assign(keras.ops.copy(value))


def clone_graph(model, clone_layer):
    """Clones a Sequential or functional `model` with `clone_layer`.

    `clone_layer(layer)` returns `(new_layer, finish)`: once the clone is
    built, `finish()` (unless None) is called, e.g. to write weights.
    """
    pending = []

    def clone_function(layer):
        new_layer, finish = clone_layer(layer)
        if finish is not None:
            pending.append(finish)
        return new_layer

    clone = keras.models.clone_model(
        model,
        input_tensors=_named_inputs(model),
        clone_function=clone_function,
        recursive=True,
    )
    for finish in pending:
        finish()
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


def rebuilt_copy(model, argument, config=None):
    """A built copy of a model that is not a plain graph, same class.

    Rebuilt from its config (or from `config`, an edited one), or by
    calling its class with no arguments when its config does not rebuild
    it and its `__init__` needs none; then
    built by calling it on symbolic inputs and compiled like `model`.
    Raises `ValueError` naming `argument` when neither works or the model
    was never built. Weights are the caller's to write.
    """
    build_config = model.get_build_config() if model.built else None
    if not build_config:
        raise ValueError(
            f"`{argument}` is a subclassed model that is not built yet: call "
            "it on a batch of data (or call `model.build(input_shape)`) "
            f"first. Received: {argument}={type(model).__name__} named "
            f"{model.name!r}"
        )
    copy = _construct(model, argument, config)
    _copy_assets(model, copy)
    if not copy.built:
        # Calling on symbolic inputs builds every sublayer of a subclassed
        # model (its `build_from_config` does not).
        shapes = next(iter(build_config.values()))
        copy(
            keras.tree.map_shape_structure(
                lambda shape: keras.KerasTensor(tuple(shape)), shapes
            )
        )
    if model.compiled:
        recompile(copy, model.get_compile_config())
    return copy


def recompile(model, config):
    """`model.compile` with a compile config, also for classes with their
    own `compile` (KerasHub tasks), which `compile_from_config` skips."""
    model.compile(**keras.saving.deserialize_keras_object(config))
    if model.built:  # as `compile_from_config` does
        model.optimizer.build(model.trainable_variables)


def _with_assets(model):
    """Sublayers that keep assets, breadth first, also those held only as
    attributes (a task's preprocessor on PyTorch)."""
    found, seen, queue = [], {id(model)}, [model]
    while queue:
        layer = queue.pop(0)
        for child in _compat.sublayers(layer) + _compat.attribute_layers(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            queue.append(child)
            if callable(getattr(child, "save_assets", None)):
                found.append(child)
    return found


def _copy_assets(model, copy):
    """Copies what sublayers keep outside their config and weights (a
    tokenizer's vocabulary), the way Keras saves and loads it."""
    for source, target in zip(_with_assets(model), _with_assets(copy)):
        if type(source) is type(target):
            with tempfile.TemporaryDirectory() as directory:
                source.save_assets(directory)
                target.load_assets(directory)


def _construct(model, argument, config=None):
    cls = type(model)
    try:
        return cls.from_config(config or model.get_config())
    except Exception as error:  # a user's config can raise anything
        if config is None and _takes_no_arguments(cls):
            copy = cls()
            copy.name = model.name
            return copy
        raise ValueError(
            f"`{argument}` is a {type(model).__name__} that cannot be "
            "rebuilt from its config, which pruning needs to leave it "
            "untouched: implement `get_config()` (and `from_config()` if "
            "needed), or pass `inplace=True` to edit this model itself. "
            f"Received: {argument}={type(model).__name__} named "
            f"{model.name!r} ({type(error).__name__}: {error})"
        ) from error


def _takes_no_arguments(cls):
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in parameters
    )
