"""Swapping sublayers of subclassed models, which cannot be cloned.

A subclassed `keras.Model` is rebuilt from its config into a copy, and
sublayers of the copy are swapped in place: the attribute, list, tuple or
dict entry that holds a layer, and the parent's record of its sublayers.
Keras keeps that record privately (`_layers`, `_tracker`); this module is
the only one that touches it.
"""

import keras


def children(layer):
    """The direct sublayers of a layer, in tracking order."""
    return list(layer._layers)


def own_weights(layer):
    """Variables created by `layer` itself, not by its sublayers."""
    inner = {id(v) for child in children(layer) for v in child.weights}
    return [v for v in layer.weights if id(v) not in inner]


def rebuilt_copy(model, argument):
    """A built copy of a subclassed model, rebuilt from its config.

    Raises `ValueError` naming `argument` when the model cannot be rebuilt
    from its config or was never built.
    """
    build_config = model.get_build_config() if model.built else None
    if not build_config:
        raise ValueError(
            f"`{argument}` is a subclassed model that is not built yet: call "
            "it on a batch of data (or call `model.build(input_shape)`) "
            f"first. Received: {argument}={type(model).__name__} named "
            f"{model.name!r}"
        )
    try:
        copy = model.__class__.from_config(model.get_config())
    except (NotImplementedError, TypeError) as error:
        raise ValueError(
            f"`{argument}` is a subclassed model that cannot be rebuilt from "
            "its config, which pruning needs to leave it untouched: "
            "implement `get_config()` (and `from_config()` if needed) on "
            f"{type(model).__name__}. Received: {argument}="
            f"{type(model).__name__} named {model.name!r} ({error})"
        ) from error
    # Calling on symbolic inputs builds every sublayer of a subclassed
    # model (its `build_from_config` does not).
    shapes = next(iter(build_config.values()))
    copy(
        keras.tree.map_shape_structure(
            lambda shape: keras.KerasTensor(tuple(shape)), shapes
        )
    )
    if model.compiled:
        copy.compile_from_config(model.get_compile_config())
    return copy


def replace(parent, old, new):
    """Makes `parent` hold `new` wherever it held the sublayer `old`."""
    parent._tracker.replace_tracked_value("layers", old, new)
    for name, value in list(vars(parent).items()):
        if name in ("_layers", "_tracker"):
            continue
        swapped = _swap(value, old, new)
        if swapped is not value:
            object.__setattr__(parent, name, swapped)


def _swap(value, old, new):
    """`value` with `old` replaced by `new`; lists and dicts change in place."""
    if value is old:
        return new
    if isinstance(value, list):
        for index, item in enumerate(value):
            list.__setitem__(value, index, _swap(item, old, new))
    elif isinstance(value, dict):
        for key, item in list(value.items()):
            dict.__setitem__(value, key, _swap(item, old, new))
    elif isinstance(value, tuple) and not isinstance(value, keras.KerasTensor):
        items = [_swap(item, old, new) for item in value]
        if any(a is not b for a, b in zip(items, value)):
            return (
                type(value)(items)
                if not hasattr(value, "_fields")
                else (type(value)(*items))
            )
    return value
