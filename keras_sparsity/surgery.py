"""Swapping one sublayer of a model or layer for another, in place.

A layer is held by its parent in attributes, lists, tuples or dicts, in the
parent's record of its sublayers and, in a functional model, in the graph
nodes that call it: `replace` changes all of them. Used on copies (and on
the user's model only when pruning in place was asked for).
"""

import keras

from keras_sparsity import _compat


def replace(parent, old, new):
    """Makes `parent` hold and call `new` wherever it held `old`."""
    _compat.untrack(parent, old, new)
    _compat.swap_in_graph(parent, old, new)
    for name, value in list(vars(parent).items()):
        if name in _compat.TRACKING_ATTRIBUTES:
            continue
        swapped = _swap(value, old, new)
        if swapped is not value:
            object.__setattr__(parent, name, swapped)


def _swap(value, old, new):
    """`value` with `old` replaced by `new`; lists and dicts change in place."""
    if value is old:
        return new
    if isinstance(value, list):
        items = _compat.storage(value)
        for index, item in enumerate(items):
            list.__setitem__(items, index, _swap(item, old, new))
    elif isinstance(value, dict):
        items = _compat.storage(value)
        for key, item in list(items.items()):
            dict.__setitem__(items, key, _swap(item, old, new))
    elif isinstance(value, tuple) and not isinstance(value, keras.KerasTensor):
        items = [_swap(item, old, new) for item in value]
        if any(a is not b for a, b in zip(items, value)):
            return (
                type(value)(items)
                if not hasattr(value, "_fields")
                else (type(value)(*items))
            )
    return value
