"""Every access to Keras internals, in one place (keras 3.15.1 is pinned).

Each function names the private it reads or writes; `tests/test_compat.py`
exercises each one, so a Keras upgrade that moves one fails there first.
"""

from keras.src.models.functional import Functional


def is_functional(model):
    """True for a model that runs a graph of layers: Sequential, functional
    and functional subclasses (KerasHub backbones and tasks)."""
    import keras

    return isinstance(model, (keras.Sequential, Functional))


def sublayers(layer):
    """The direct sublayers of a layer, in tracking order (`_layers`)."""
    return list(getattr(layer, "_layers", ()))


def attribute_layers(layer):
    """Layers held in `layer`'s attributes, including PyTorch's `_modules`
    (where a layer set as an attribute lives on the torch backend)."""
    import keras

    values = list(vars(layer).values())
    values += list(getattr(layer, "_modules", {}).values())
    return [v for v in values if isinstance(v, keras.layers.Layer)]


def all_sublayers(layer):
    """Every sublayer at any depth, each once (`_flatten_layers`)."""
    return list(layer._flatten_layers(include_self=False))


def untrack(parent, old, new):
    """Makes the parent's record of its sublayers hold `new` for `old`
    (`_tracker`, `_layers`)."""
    parent._tracker.replace_tracked_value("layers", old, new)
    layers = getattr(parent, "_layers", None)
    if isinstance(layers, list):
        for index, layer in enumerate(layers):
            if layer is old:
                list.__setitem__(layers, index, new)


TRACKING_ATTRIBUTES = ("_layers", "_tracker")


def storage(container):
    """The plain list or dict that holds a container attribute's items:
    itself, or, for TensorFlow's tracking wrappers (which Keras layers get
    on the TensorFlow backend), `ListWrapper._storage` or
    `_DictWrapper.__wrapped__`."""
    for name in ("_storage", "__wrapped__"):
        inner = getattr(container, name, None)
        if type(inner) in (list, dict):
            return inner
    return container


def swap_in_graph(model, old, new):
    """Makes a functional model call `new` wherever its graph called `old`
    (`Node.operation`, `Function._operations`, `Operation._inbound_nodes`).

    Only the graph's execution changes: the model's config still names
    `old`'s layer, which is why plain Sequential and functional models are
    cloned instead.
    """
    if not isinstance(model, Functional):
        return
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            if node.operation is old:
                node.operation = new
    model._operations = [new if op is old else op for op in model._operations]
    for depth, operations in model._operations_by_depth.items():
        model._operations_by_depth[depth] = [
            new if op is old else op for op in operations
        ]
    new._inbound_nodes = old._inbound_nodes
    new._outbound_nodes = old._outbound_nodes


def producing_node(tensor):
    """The graph node that produced a symbolic tensor (`_keras_history`,
    `_inbound_nodes`), as Keras' own `ops/function.py` walks it."""
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def litert_ops(interpreter):
    """The operators of a loaded `.tflite` model
    (`Interpreter._get_ops_details`: no public call lists them)."""
    return interpreter._get_ops_details()


def is_plain_graph(model):
    """True for a Sequential or functional model of Keras' own classes,
    which `keras.models.clone_model` copies faithfully (a subclass would
    come back as a plain `Functional`)."""
    import keras

    return type(model) in (keras.Sequential, Functional)


def optimizer_slots(optimizer, variable):
    """The optimizer's per-variable state for `variable` (Adam's moments,
    SGD's momentum, ...): every list attribute of the optimizer that holds
    one entry per trainable variable, read at `variable`'s index
    (`_get_variable_index`), where the entry has its shape."""
    import keras

    try:
        index = optimizer._get_variable_index(variable)
    except (AttributeError, KeyError):
        return []
    count = len(optimizer._trainable_variables)
    slots = []
    for value in vars(optimizer).values():
        if not isinstance(value, (list, tuple)) or len(value) != count:
            continue
        slot = value[index]
        if (
            isinstance(slot, keras.Variable)
            and slot is not variable
            and tuple(slot.shape) == tuple(variable.shape)
        ):
            slots.append(slot)
    return slots


def graph_calls(model):
    """The graph of a Sequential or functional model, as
    `(inputs, outputs, calls)`: its symbolic input and output tensors and
    each call of an operation, in execution order, as
    `(operation, input_tensors, output_tensors)` (`Sequential._functional`,
    `Function._nodes_by_depth`, `Node.input_tensors`, `Node.outputs`).
    Calls of `InputLayer`s are left out. None for a model without a graph
    (a subclassed model, or a Sequential that was never built)."""
    import keras

    graph = model
    if isinstance(model, keras.Sequential):
        graph = model._functional
    if not isinstance(graph, Functional):
        return None
    calls = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if isinstance(node.operation, keras.layers.InputLayer):
                continue
            calls.append(
                (node.operation, list(node.input_tensors), list(node.outputs))
            )
    return list(graph.inputs), list(graph.outputs), calls
