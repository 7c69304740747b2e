"""Pruning policies: which layers of a whole model `prune_low_magnitude` wraps.

A policy is consulted only when a `keras.Sequential` or functional
`keras.Model` is pruned: `ensure_model_supports_pruning(model)` runs before
anything is cloned, then `allow_pruning(layer)` for every prunable layer.
Policies are not serialized: a pruned model does not remember which policy
chose its layers, so policies have no `get_config`.
"""

import abc
import functools

import keras

from keras_sparsity import _compat
from keras_sparsity.wrapper import PruneLowMagnitude

L = keras.layers

START_LAYER_ERROR = (
    "Could not find `Conv2D 3x3` layer with stride 2x2, `input filters == 3` "
    "and `VALID` padding and preceding `ZeroPadding2D` with `padding == 1` in "
    "all input branches of the model"
)
END_LAYER_ERROR = (
    "Could not find a `GlobalAveragePooling2D` layer in all output branches"
)
SUBCLASSED_ERROR = "Subclassed models are not supported currently."
UNBUILT_ERROR = "Unbuilt models are not supported currently."

_SUPPORTED_SUMMARY = (
    "Conv2D 1x1 with stride 1; DepthwiseConv2D 3x3 or 5x5 with "
    "depth_multiplier 1, either 'same' with stride 1 or 'valid' after a "
    "ZeroPadding2D of 1 (3x3) or 2 (5x5); BatchNormalization on axis 3; "
    "ReLU, LeakyReLU, ELU and Activation relu/relu6/leaky_relu/elu/sigmoid; "
    "Add, Multiply and `+`, `-`, `*` on tensors; ZeroPadding2D, Dropout, "
    "Identity, UpSampling2D(interpolation='bilinear') and "
    "GlobalAveragePooling2D(keepdims=True)"
)
_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid")


class PruningPolicy(abc.ABC):
    """Chooses the layers of a model to prune, and the models it accepts.

    Pass an instance as `prune_low_magnitude(model, pruning_policy=...)`.
    Before the model is cloned, `ensure_model_supports_pruning(model)` may
    reject it with a `ValueError`; then each layer that this library can
    prune is wrapped only if `allow_pruning(layer)` returns True (layers
    that are already `PruneLowMagnitude` stay pruned). Policies are used
    only for whole models, and are not saved with them.

    Example:

    ```python
    class PruneDenseOnly(sparsity.PruningPolicy):
        def allow_pruning(self, layer):
            return isinstance(layer, keras.layers.Dense)

        def ensure_model_supports_pruning(self, model):
            if not any(isinstance(l, keras.layers.Dense) for l in model.layers):
                raise ValueError("PruneDenseOnly needs a Dense layer.")

    pruned = sparsity.prune_low_magnitude(
        model, pruning_policy=PruneDenseOnly()
    )
    ```
    """

    @abc.abstractmethod
    def allow_pruning(self, layer):
        """Returns True if `layer` (a prunable layer) should be pruned."""

    @abc.abstractmethod
    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError` if this policy cannot prune `model`."""


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the 1x1 `Conv2D` layers that XNNPACK runs faster sparse.

    TFLite's XNNPACK delegate runs a convolutional network with sparse
    1x1 convolutions faster ("Fast Sparse ConvNets", Elsen et al., 2019)
    when the sparse part of the network starts with a 3x3 stride-2 'valid'
    `Conv2D` on 3 input channels after `ZeroPadding2D(1)`, ends with
    `GlobalAveragePooling2D`, and holds only layers XNNPACK supports in
    between. `ensure_model_supports_pruning` checks that, with TFMOT's
    error messages (followed by details and a `Received:` part); layers
    after the `GlobalAveragePooling2D` are not checked.
    `allow_pruning` accepts only `Conv2D` layers with `kernel_size (1, 1)`.

    The graph is walked call by call, so a shared layer is checked at
    every call, and nested `keras.Sequential` and functional models are
    walked through (TFMOT looks only at a nested Sequential's first
    layer). Keras 3 has no `TFOpLambda`: its counterparts are the
    operations that `keras.ops.add`, `subtract` and `multiply` (and `+`,
    `-`, `*` on symbolic tensors) record, which are accepted, and
    `keras.layers.Identity`, which replaces `tf.identity`; other
    `keras.ops` calls are rejected by their class name (e.g. `Mean`).
    Already pruned layers are checked as the layer they wrap, so a pruned
    model can be pruned again. `BatchNormalization` may use `axis=-1` or
    `axis=3`.

    Example:

    ```python
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu")(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    pruned = sparsity.prune_low_magnitude(
        model, pruning_policy=sparsity.PruneForLatencyOnXNNPack()
    )  # only the 1x1 Conv2D is pruned
    ```
    """

    def allow_pruning(self, layer):
        """True for `Conv2D` layers with `kernel_size == (1, 1)`."""
        return isinstance(layer, L.Conv2D) and layer.kernel_size == (1, 1)

    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError` unless `model` fits XNNPACK's sparse path."""
        if not _compat.is_functional(model):
            raise ValueError(
                f"{SUBCLASSED_ERROR} Build the model with keras.Sequential "
                "or the functional API. Received: model of type "
                f"{type(model).__name__}"
            )
        if not model.built:
            raise ValueError(
                f"{UNBUILT_ERROR} Start the model with `keras.Input(shape)` "
                "or call `model.build(input_shape)` first. Received: "
                f"model={model.name!r}"
            )
        graph = _Graph(model)
        starts, dead_end = _search(
            graph.inputs,
            lambda v: _is_start_layer(graph, v),
            graph.consumers.__getitem__,
        )
        if dead_end is not None:
            raise ValueError(
                f"{START_LAYER_ERROR}. Begin every input branch with "
                "ZeroPadding2D(1) then Conv2D(filters, 3, strides=2, "
                "padding='valid') on 3 channels, as MobileNet does. "
                f"Received: the branch ending at {_describe(graph, dead_end)} "
                "has none"
            )
        ends, dead_end = _search(
            graph.outputs,
            lambda v: isinstance(graph.layer(v), L.GlobalAveragePooling2D),
            graph.producers.__getitem__,
        )
        if dead_end is not None:
            raise ValueError(
                f"{END_LAYER_ERROR}. Put a GlobalAveragePooling2D on the "
                "way to every output. Received: the branch from "
                f"{_describe(graph, dead_end)} to an output has none"
            )
        ends = set(ends)

        def check(vertex):
            if vertex in ends:
                return True
            if not _is_supported(graph, vertex):
                layer = graph.layer(vertex)
                raise ValueError(
                    f"Layer {type(layer).__name__} is not supported for the "
                    f"{type(self).__name__} pruning policy. Between the "
                    "start Conv2D and GlobalAveragePooling2D, XNNPACK's "
                    f"sparse inference supports only: {_SUPPORTED_SUMMARY}. "
                    f"Received: {_describe(graph, vertex)}"
                )
            return False

        after_starts = [c for s in starts for c in graph.consumers[s]]
        _search(after_starts, check, graph.consumers.__getitem__)


def _search(sources, is_target, neighbours):
    """Walks from `sources` until every branch meets a target vertex.

    Returns `(targets, dead_end)`: the targets met and, if some branch
    ends before meeting one, the vertex where it ends (else None). Like
    TFMOT's `_lookup_layers`, each vertex is visited once.
    """
    to_visit = list(dict.fromkeys(sources))
    seen = set(to_visit)
    found = []
    while to_visit:
        vertex = to_visit.pop()
        if is_target(vertex):
            found.append(vertex)
            continue
        following = neighbours(vertex)
        if not following:
            return found, vertex
        for neighbour in following:
            if neighbour not in seen:
                seen.add(neighbour)
                to_visit.append(neighbour)
    return found, None


def _is_start_layer(graph, vertex):
    """A 3x3 stride-2 'valid' Conv2D on 3 channels after ZeroPadding2D(1)."""
    layer = _unwrapped(graph.layer(vertex))
    if not isinstance(layer, L.Conv2D):
        return False
    producers = [_unwrapped(graph.layer(p)) for p in graph.producers[vertex]]
    return (
        tuple(layer.kernel.shape[:3]) == (3, 3, 3)
        and layer.strides == (2, 2)
        and layer.padding == "valid"
        and len(producers) == 1
        and isinstance(producers[0], L.ZeroPadding2D)
        and producers[0].padding == ((1, 1), (1, 1))
    )


def _is_supported(graph, vertex):
    """Whether XNNPACK's sparse inference accepts this call (TFMOT's list).

    Mirrors the compatibility checks of XNNPACK's `subgraph.c`.
    """
    layer = _unwrapped(graph.layer(vertex))
    if isinstance(
        layer,
        (
            L.Add,
            L.Multiply,
            L.ZeroPadding2D,
            L.ReLU,
            L.LeakyReLU,
            L.ELU,
            L.Dropout,
            L.Identity,
        )
        + _elementwise_operation_types(),
    ):
        return True
    if isinstance(layer, L.DepthwiseConv2D):
        return _is_supported_depthwise(graph, vertex, layer)
    if isinstance(layer, L.Conv2D):
        return (
            layer.groups == 1
            and layer.dilation_rate == (1, 1)
            and layer.kernel_size == (1, 1)
            and layer.strides == (1, 1)
        )
    if isinstance(layer, L.GlobalAveragePooling2D):
        return layer.keepdims
    if isinstance(layer, L.BatchNormalization):
        return layer.axis in (3, -1)
    if isinstance(layer, L.UpSampling2D):
        return layer.interpolation == "bilinear"
    if isinstance(layer, L.Activation):
        return layer.activation in [
            keras.activations.get(name) for name in _ACTIVATIONS
        ]
    return False


def _is_supported_depthwise(graph, vertex, layer):
    """3x3 or 5x5, 'same' at stride 1 or 'valid' after matching padding."""
    if layer.depth_multiplier != 1 or layer.dilation_rate != (1, 1):
        return False
    if layer.kernel_size not in ((3, 3), (5, 5)):
        return False
    if layer.padding == "same":
        return layer.strides == (1, 1)
    producers = [_unwrapped(graph.layer(p)) for p in graph.producers[vertex]]
    pad = layer.kernel_size[0] // 2
    return (
        layer.strides in ((1, 1), (2, 2))
        and len(producers) == 1
        and isinstance(producers[0], L.ZeroPadding2D)
        and producers[0].padding == ((pad, pad), (pad, pad))
    )


def _unwrapped(layer):
    return layer.layer if isinstance(layer, PruneLowMagnitude) else layer


def _describe(graph, vertex):
    operation = graph.layer(vertex)
    return f"layer {operation.name!r} ({type(operation).__name__})"


@functools.cache
def _elementwise_operation_types():
    """The operation classes that `keras.ops.add/subtract/multiply` record.

    Found by calling each op on a symbolic tensor, so no private Keras
    module is imported (Keras 3's counterpart of TFMOT's `TFOpLambda`
    check for `tf.math.add`, `subtract` and `multiply`).
    """
    x = keras.KerasTensor((1,))
    return tuple(
        type(_compat.producing_node(op(x, x)).operation)
        for op in (keras.ops.add, keras.ops.subtract, keras.ops.multiply)
    )


class _Graph:
    """The calls of a model's layers and operations as a graph.

    A vertex is one call: a tuple of the `Node`s of the nested models it
    sits in, then its own `Node`. Nested Sequential and functional models
    are replaced by their own calls, so a branch runs through them.
    """

    def __init__(self, model):
        self.producers = {}
        self.consumers = {}
        self.inputs = []
        for tensor in model.inputs:
            vertex = (_compat.producing_node(tensor),)
            self._add_vertex(vertex, [])
            self.inputs.append(vertex)
        self.outputs = list(
            dict.fromkeys(self._add_model(model, (), self.inputs))
        )

    @staticmethod
    def layer(vertex):
        return vertex[-1].operation

    def _add_vertex(self, vertex, sources):
        self.producers[vertex] = list(dict.fromkeys(sources))
        self.consumers.setdefault(vertex, [])
        for source in self.producers[vertex]:
            self.consumers[source].append(vertex)

    def _add_model(self, model, context, sources):
        """Adds the calls inside `model`, whose inputs come from `sources`.

        Returns the vertices that produce the model's outputs, in order.
        """
        source_of = {
            id(tensor): source for tensor, source in zip(model.inputs, sources)
        }
        for node in _nodes_in_order(model.outputs, source_of):
            sources = [source_of[id(t)] for t in node.input_tensors]
            if _compat.is_functional(node.operation):
                outputs = self._add_model(
                    node.operation, context + (node,), sources
                )
            else:
                vertex = context + (node,)
                self._add_vertex(vertex, sources)
                outputs = [vertex] * len(node.output_tensors)
            for tensor, output in zip(node.output_tensors, outputs):
                source_of[id(tensor)] = output
        return [source_of[id(tensor)] for tensor in model.outputs]


def _nodes_in_order(outputs, known):
    """The nodes between the tensors in `known` and `outputs`, inputs first.

    `known` holds `id(tensor)` for the model's inputs. Iterative, so deep
    models do not hit Python's recursion limit.
    """
    order = []
    seen = set()
    stack = [(tensor, False) for tensor in reversed(outputs)]
    while stack:
        item, expanded = stack.pop()
        if expanded:
            order.append(item)
            continue
        if id(item) in known:
            continue
        node = _compat.producing_node(item)
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((t, False) for t in reversed(node.input_tensors))
    return order
