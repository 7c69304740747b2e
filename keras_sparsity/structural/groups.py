"""Dependency groups: which channels of which layers must go together.

`find_groups` walks a Sequential or functional model's graph once, in
execution order. Each `KERNEL` layer (Dense, Conv, SeparableConv) starts a
group of its output channels; channel-local layers carry their input's
channels forward; an elementwise merge makes its inputs' groups one group
(a residual block's members all lose the same channels); a Concatenate on
the channel axis lays its inputs' channels side by side, each keeping its
own group at an offset; a Flatten repeats each channel at every spatial
position. Along the way it records, per group, who writes it, who carries
it, who reads it (kernel rows) and the channels' constant values there,
and why a group must be kept whole.
"""

import dataclasses

import keras
import numpy as np

from keras_sparsity import _compat
from keras_sparsity.structural import constants
from keras_sparsity.structural import kinds


@dataclasses.dataclass
class Channels:
    """The channel (last) axis of one tensor.

    `segments` lists `(group, length)` in order along the axis, `group`
    None for channels that belong to no group (a model input, the output
    of an unknown layer). `positions` counts the spatial positions a
    Flatten spread each channel over (channel-minor); `values` holds each
    channel's constant value, NaN where not constant.
    """

    segments: list
    positions: int
    values: np.ndarray

    @property
    def num_channels(self):
        return sum(length for _, length in self.segments)

    def offsets(self):
        """`(group, offset, length)` for each segment."""
        return offsets(self.segments)


def offsets(segments):
    """`(group, offset, length)` for each `(group, length)` laid end to
    end along an axis."""
    found, offset = [], 0
    for group, length in segments:
        found.append((group, offset, length))
        offset += length
    return found


@dataclasses.dataclass
class Read:
    """A `KERNEL` layer reading a group's channels through its kernel rows:
    the values it sees, and whether a nonzero constant can be folded."""

    layer: str
    values: np.ndarray
    folds: bool


@dataclasses.dataclass
class Group:
    """Channels that are removed together, and what touches them."""

    index: int
    size: int
    producers: list = dataclasses.field(default_factory=list)
    members: list = dataclasses.field(default_factory=list)
    consumers: list = dataclasses.field(default_factory=list)
    reads: list = dataclasses.field(default_factory=list)
    reasons: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Graph:
    """What `find_groups` found: the groups (merged ones removed), per
    layer name its kind and its (single) input's and output's `Channels`,
    and per `id(layer)` how many times the graph calls it."""

    groups: list
    kinds: dict
    inputs: dict
    outputs: dict
    calls: dict


class _Walk:
    def __init__(self):
        self.groups = []
        self.parent = []
        self.tensors = {}
        self.kinds = {}
        self.inputs = {}
        self.outputs = {}

    # Groups, merged with union-find.

    def new_group(self, size):
        group = Group(len(self.groups), size)
        self.groups.append(group)
        self.parent.append(group.index)
        return group.index

    def find(self, index):
        while self.parent[index] != index:
            self.parent[index] = self.parent[self.parent[index]]
            index = self.parent[index]
        return index

    def group(self, index):
        return self.groups[self.find(index)]

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        keep, gone = self.groups[min(a, b)], self.groups[max(a, b)]
        for field in ("producers", "members", "consumers", "reads", "reasons"):
            getattr(keep, field).extend(getattr(gone, field))
        self.parent[gone.index] = keep.index
        return keep.index

    def keep(self, channels, reason):
        for group, _ in channels.segments:
            if group is not None and reason not in self.group(group).reasons:
                self.group(group).reasons.append(reason)

    def note(self, channels, field, name):
        for group, _ in channels.segments:
            if group is not None:
                entries = getattr(self.group(group), field)
                if name not in entries:
                    entries.append(name)

    # The walk.

    def opaque(self, tensor):
        size = tensor.shape[-1] if len(tensor.shape) else 0
        size = size or 0
        return Channels([(None, size)], 1, constants.unknown(size))

    def visit(self, layer, inputs, outputs, shared):
        name = getattr(layer, "name", type(layer).__name__)
        shapes = [tuple(t.shape) for t in inputs]
        kind, reason = kinds.classify(layer, shapes)
        if shared:
            kind, reason = kinds.UNKNOWN, "is called more than once"
        channels = [self.tensors[id(t)] for t in inputs]
        self.kinds[name] = kind
        if channels:
            self.inputs[name] = channels[0]
        handler = getattr(self, f"_{kind}")
        result = handler(layer, name, channels, shapes, reason)
        if result is None:
            for tensor in outputs:
                self.tensors[id(tensor)] = self.opaque(tensor)
            return
        self.tensors[id(outputs[0])] = result
        self.outputs[name] = result

    def _unknown(self, layer, name, channels, shapes, reason):
        for found in channels:
            self.keep(found, f"{name} {reason}")
        return None

    def _kernel(self, layer, name, channels, shapes, reason):
        (found,) = channels
        folds = kinds.folds_constants(layer)
        for group, offset, length in found.offsets():
            if group is not None:
                self.group(group).reads.append(
                    Read(name, found.values[offset : offset + length], folds)
                )
        self.note(found, "consumers", name)
        values = constants.produced(layer)
        index = self.new_group(len(values))
        self.groups[index].producers.append(name)
        result = Channels([(index, len(values))], 1, values)
        if kinds.mixes_output_channels(layer):
            self.keep(result, f"{name}'s activation mixes its output channels")
        return result

    def _passthrough(self, layer, name, channels, shapes, reason):
        (found,) = channels
        self.note(found, "members", name)
        values = constants.through(
            layer, found.values, shapes[0], found.positions
        )
        return Channels(list(found.segments), found.positions, values)

    def _channelwise(self, layer, name, channels, shapes, reason):
        (found,) = channels
        if found.positions != 1:
            return self._unknown(
                layer, name, channels, shapes, "follows a Flatten"
            )
        return self._passthrough(layer, name, channels, shapes, reason)

    def _depthwise(self, layer, name, channels, shapes, reason):
        (found,) = channels
        if found.positions != 1:
            return self._unknown(
                layer, name, channels, shapes, "follows a Flatten"
            )
        self.note(found, "members", name)
        zero = constants.zero_columns(_depthwise_columns(layer.kernel))
        values = constants.through(
            layer, found.values, shapes[0], also_known=zero
        )
        return Channels(list(found.segments), 1, values)

    def _merge(self, layer, name, channels, shapes, reason):
        segments = self._unify(layer, name, channels, shapes)
        if segments is None:
            return None
        values = constants.merged(layer, [c.values for c in channels])
        return Channels(segments, channels[0].positions, values)

    def _unify(self, layer, name, channels, shapes):
        """Makes the inputs' channels one group, segment by segment; the
        merged segments, or None when the inputs' layouts differ."""
        layouts = {
            (c.positions, tuple(length for _, length in c.segments))
            for c in channels
        }
        if len(layouts) != 1:
            self._unknown(
                layer,
                name,
                channels,
                shapes,
                "merges inputs whose channels are laid out differently",
            )
            return None
        segments = []
        for parts in zip(*(c.segments for c in channels)):
            groups = [group for group, _ in parts]
            length = parts[0][1]
            if any(group is None for group in groups):
                for found in channels:
                    self.keep(
                        found,
                        f"{name} merges it with channels that cannot be cut",
                    )
                segments.append((None, length))
                continue
            index = groups[0]
            for other in groups[1:]:
                index = self.union(index, other)
            segments.append((index, length))
        for found in channels:
            self.note(found, "members", name)
        return segments

    def _concat(self, layer, name, channels, shapes, reason):
        rank = len(shapes[0])
        if layer.axis not in (-1, rank - 1):
            return self._merge_equal(layer, name, channels, shapes)
        if any(c.positions != 1 for c in channels):
            return self._unknown(
                layer, name, channels, shapes, "follows a Flatten"
            )
        for found in channels:
            self.note(found, "members", name)
        segments = [s for c in channels for s in c.segments]
        values = np.concatenate([c.values for c in channels])
        return Channels(segments, 1, values)

    def _merge_equal(self, layer, name, channels, shapes):
        """A Concatenate along another axis: its inputs share channels."""
        segments = self._unify(layer, name, channels, shapes)
        if segments is None:
            return None
        stacked = np.stack([c.values for c in channels])
        equal = np.all(stacked == stacked[0], axis=0)
        values = np.where(equal, stacked[0], np.nan)
        return Channels(segments, channels[0].positions, values)

    def _flatten(self, layer, name, channels, shapes, reason):
        (found,) = channels
        positions = constants.spatial_positions(shapes[0])
        if positions is None:
            return self._unknown(
                layer, name, channels, shapes, "has unknown spatial dimensions"
            )
        self.note(found, "members", name)
        return Channels(
            list(found.segments), found.positions * positions, found.values
        )


def _depthwise_columns(kernel):
    """A depthwise kernel `(..., channels, 1)` as `(..., channels)`, so its
    last axis is the channel axis."""
    return keras.ops.convert_to_numpy(kernel)[..., 0]


def check_graph_model(model, why):
    """Raises unless `model` is a built Sequential or functional model, the
    kind whose graph `find_groups` walks; `why` says, for the error, what
    the caller needs the graph for."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a Sequential or functional "
            f"keras.Model. Received: model={model!r} of type "
            f"{type(model).__name__}"
        )
    if not _compat.is_plain_graph(model):
        raise ValueError(
            "Argument `model` must be a Sequential or functional "
            f"keras.Model: {why} Received: "
            f"model={model.name!r} of type {type(model).__name__}"
        )
    if _compat.graph_calls(model) is None:
        raise ValueError(
            "Argument `model` must be built: give the Sequential model a "
            "`keras.Input` first, or call it on data. Received: "
            f"model={model.name!r}"
        )


def find_groups(model):
    """Walks `model`'s graph and returns its `Graph` of channel groups.

    A group reaching a model output is kept: the model's outputs keep
    their shapes.
    """
    inputs, outputs, calls = _compat.graph_calls(model)
    walk = _Walk()
    for tensor in inputs:
        walk.tensors[id(tensor)] = walk.opaque(tensor)
    counts = {}
    for layer, _, _ in calls:
        counts[id(layer)] = counts.get(id(layer), 0) + 1
    for layer, layer_inputs, layer_outputs in calls:
        walk.visit(layer, layer_inputs, layer_outputs, counts[id(layer)] > 1)
    for tensor in outputs:
        walk.keep(walk.tensors[id(tensor)], "reaches a model output")
    for channels in list(walk.inputs.values()) + list(walk.outputs.values()):
        channels.segments = [
            (None if g is None else walk.find(g), n)
            for g, n in channels.segments
        ]
    groups = [g for g in walk.groups if walk.find(g.index) == g.index]
    return Graph(groups, walk.kinds, walk.inputs, walk.outputs, counts)
