"""`prune_channels`: gradual structured pruning of whole channel groups.

The groups are `shrink`'s (`groups.find_groups`): channels that must go
together (a residual block's branches, a convolution and its
BatchNormalization and depthwise followers). Each layer touching a
prunable group is wrapped in `PruneChannels`, which masks, along the
channel axis, every variable that writes the channel: the producer's
kernel columns and bias, BatchNormalization's gamma and beta, a depthwise
kernel and bias. A removed channel is therefore exactly zero after its
layers (not a constant), and `shrink` cuts it without folding anything.

Inside transformer layers (`transformers`: Keras' attention layers,
KerasHub blocks) the groups are attention heads (a key/value head with its
query heads: the value projection and the output rows) and feed-forward
units (input columns and output rows). A model without a plain graph
(a KerasHub backbone or task) is rebuilt, same class, and only those are
pruned.

The masks are computed by the pruning engine (`engine.SparsityOptimizer`)
in one selection over all the model's groups at each step the schedule
says (`channel_masks`), so coupled layers always lose the same channels.
"""

import dataclasses
import inspect
import numbers

import keras
from keras import ops

from keras_sparsity import _compat
from keras_sparsity import cloning
from keras_sparsity import criteria
from keras_sparsity import masks as mask_math
from keras_sparsity import registry
from keras_sparsity import surgery
from keras_sparsity.engine import CHANNELS
from keras_sparsity.engine import install_engine_on_compile
from keras_sparsity.schedules import PruningSchedule
from keras_sparsity.structural import groups as groups_lib
from keras_sparsity.structural import kinds
from keras_sparsity.structural import transformers
from keras_sparsity.wrapper import PruneLowMagnitude

IMPORTANCES = ("l1", "l2", "bn_gamma", "taylor")
HEADS = "heads/"  # the key of a layer's head group: "heads/<layer>"
UNITS = "units/"  # of its feed-forward units
ALLOCATIONS = ("uniform", "global")


@dataclasses.dataclass(frozen=True)
class ChannelSpec:
    """One masked variable of a layer: its attribute path, its channel
    axis, the groups laid along that axis (`(group, length)`, group None
    for channels that are not pruned), whether it scores channels, and how
    many consecutive entries along the axis each channel spans (`repeat`:
    the query heads of one key/value head)."""

    weight: str
    axis: int
    segments: tuple
    scores: bool
    repeat: int = 1

    def offsets(self):
        """`(group, offset, length)` per segment, in channels."""
        return groups_lib.offsets(self.segments)

    def to_config(self):
        return [self.weight, self.axis, [list(s) for s in self.segments],
                self.scores, self.repeat]

    @classmethod
    def from_config(cls, config):
        weight, axis, segments, scores, *repeat = config
        return cls(
            weight, int(axis), tuple((g, int(n)) for g, n in segments),
            bool(scores), int(repeat[0]) if repeat else 1,
        )


@keras.saving.register_keras_serializable(package="keras_sparsity")
class PruneChannels(PruneLowMagnitude):
    """Wraps a layer whose output channels are pruned as whole channels.

    Created by `prune_channels`, which works out, from the model's graph,
    which variables of the layer write which channel groups. Masks are
    0/1 along each variable's channel axis; the engine computes them for
    all groups of the model together (see `channel_masks`).

    Args:
        layer: The wrapped layer (Dense, Conv, SeparableConv, DepthwiseConv
            or BatchNormalization).
        pruning_schedule: A `PruningSchedule` over the share of channels
            removed from each group (or from all, with global allocation).
        channels: A list of `ChannelSpec` configs, one per masked variable.
        importance: `"l1"`, `"l2"`, `"bn_gamma"` or `"taylor"`.
        allocation: `"uniform"` or `"global"`.
        round_to: Kept channels per group are a multiple of this.
        **kwargs: Passed to `keras.layers.Wrapper` (e.g. `name`).
    """

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        channels=(),
        importance="l2",
        allocation="uniform",
        round_to=1,
        **kwargs,
    ):
        for fixed in (
            "block_size", "block_pooling_type", "sparsity_m_by_n",
            "criterion", "kernel_targets", "regrowth",
        ):
            kwargs.pop(fixed, None)  # saved by the base config; not options
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "Argument `layer` must be a keras.layers.Layer. Received: "
                f"layer={layer!r}"
            )
        if not isinstance(channels, (list, tuple)) or not all(
            isinstance(c, ChannelSpec)
            or (isinstance(c, (list, tuple)) and len(c) in (4, 5))
            for c in channels
        ):
            raise ValueError(
                "Argument `channels` must be a list of `ChannelSpec`s (or "
                "their configs), as `prune_channels` builds. Received: "
                f"channels={channels!r}"
            )
        kwargs.setdefault("name", f"prune_channels_{layer.name}")
        _check_options(importance, allocation, round_to)
        super().__init__(
            layer,
            pruning_schedule=pruning_schedule,
            criterion="saliency" if importance == "taylor" else "magnitude",
            **kwargs,
        )
        self.channels = [
            c if isinstance(c, ChannelSpec) else ChannelSpec.from_config(c)
            for c in channels
        ]
        if not self.channels:
            raise ValueError(
                f"PruneChannels around {layer.name!r} masks no variable: "
                "pass `channels`, or use `prune_channels` on the model."
            )
        self.importance = importance
        self.allocation = allocation
        self.round_to = int(round_to)
        # Keras binds call arguments to this signature: the wrapped layer's
        # own lets a transformer layer's mixed keyword arguments (a cache
        # tensor beside an int index) through, each as itself rather than
        # one `**kwargs` dict that Keras refuses to mix.
        self._call_signature = inspect.signature(layer.call)

    def _check_layer(self, layer):
        """Any layer: `channels` name its variables (checked in `build`)."""

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self._pruned = []
        for spec in self.channels:
            variable = self.layer
            for name in spec.weight.split("."):  # "value_dense.kernel"
                variable = getattr(variable, name, None)
            if not isinstance(variable, keras.Variable):
                raise ValueError(
                    f"Layer {self.layer.name!r} has no weight "
                    f"{spec.weight!r} to mask along its channels."
                )
            self._pruned.append(registry.PrunedWeight(variable, ()))
        self._add_masks()
        self.built = True

    def weight_criterion(self, index):
        """Taylor importance keeps |w * g| only for the scoring weights."""
        if self.channels[index].scores:
            return self.criterion
        return criteria.get("magnitude")

    def ranking(self, index):
        return CHANNELS

    def kernel_sparsity(self, index, sparsity):
        return sparsity

    def channel_masks(self, owners, values, sparsity):
        """The engine's entry point: `channel_masks` below."""
        return channel_masks(owners, values, sparsity)

    def group_key(self):
        """What must be equal for wrappers to be ranked together."""
        return (self.importance, self.allocation, self.round_to)

    def get_config(self):
        config = super().get_config()
        for unused in (
            "block_size", "block_pooling_type", "sparsity_m_by_n",
            "criterion", "kernel_targets", "regrowth",
        ):
            config.pop(unused, None)
        config.update(
            channels=[spec.to_config() for spec in self.channels],
            importance=self.importance,
            allocation=self.allocation,
            round_to=self.round_to,
        )
        return config


def channel_masks(owners, values, sparsity):
    """New masks for every variable of one channel ranking.

    Args:
        owners: `(PruneChannels, index)` per masked variable.
        values: Per variable, its masked values or, for Taylor importance,
            its criterion score (already zero where the mask is zero).
        sparsity: The schedule's sparsity now (float scalar).

    Returns:
        One float32 0/1 mask per variable, constant along every axis but
        its channel axis.
    """
    first = owners[0][0]
    sizes, totals = {}, {}
    for (wrapper, index), value in zip(owners, values):
        spec = wrapper.channels[index]
        for group, offset, length in spec.offsets():
            if group is not None:
                sizes[group] = length
        if not spec.scores:
            continue
        per_channel = _per_channel(value, spec.axis, first.importance)
        if spec.repeat > 1:
            per_channel = ops.sum(
                ops.reshape(per_channel, (-1, spec.repeat)), axis=1
            )
        for group, offset, length in spec.offsets():
            if group is None:
                continue
            part = per_channel[offset : offset + length]
            totals[group] = totals[group] + part if group in totals else part
    if first.importance == "l2":
        totals = {g: ops.sqrt(t) for g, t in totals.items()}
    keep = group_keep(totals, sparsity, first.allocation, first.round_to)
    masks = []
    for (wrapper, index), value in zip(owners, values):
        spec = wrapper.channels[index]
        vector = ops.concatenate(
            [
                ops.ones((length,), "float32") if group is None
                else keep[group]
                for group, _, length in spec.offsets()
            ]
        )
        if spec.repeat > 1:
            vector = ops.repeat(vector, spec.repeat)
        shape = [1] * len(value.shape)
        shape[spec.axis] = value.shape[spec.axis]
        masks.append(
            ops.broadcast_to(ops.reshape(vector, shape), value.shape)
        )
    return masks


def _per_channel(value, axis, importance):
    value = ops.cast(value, "float32")
    axis = axis % len(value.shape)
    others = tuple(a for a in range(len(value.shape)) if a != axis)
    if importance == "l2":
        value = ops.square(value)
    elif importance != "taylor":
        value = ops.abs(value)
    return ops.sum(value, axis=others) if others else value


def group_keep(scores, sparsity, allocation, round_to):
    """Which channels of each group stay.

    Args:
        scores: `{group: float32 vector}`, one importance per channel
            (non-negative; removed channels score zero).
        sparsity: Share of channels to remove (float scalar).
        allocation: `"uniform"`: each group keeps `round(size * (1 -
            sparsity))` channels; `"global"`: the channels with the highest
            scores relative to their group's mean are kept, that many over
            all groups.
        round_to: Each group's count is rounded up to a multiple of this
            (or to the whole group), and is at least `round_to`.

    Returns:
        `{group: float32 0/1 vector}`, ties kept at the lowest index.
    """
    groups = sorted(scores, key=str)  # channel groups (int), heads (str)
    if allocation == "global":
        normalized = [
            scores[g] / (ops.mean(scores[g]) + 1e-12) for g in groups
        ]
        total = sum(int(scores[g].shape[0]) for g in groups)
        chosen = mask_math.top_k_scores(
            ops.concatenate(normalized), mask_math.keep_count(total, sparsity)
        )
        counts, offset = {}, 0
        for g in groups:
            size = int(scores[g].shape[0])
            counts[g] = ops.cast(
                ops.sum(chosen[offset : offset + size]), "int32"
            )
            offset += size
    else:
        counts = {
            g: mask_math.keep_count(int(scores[g].shape[0]), sparsity)
            for g in groups
        }
    keep = {}
    for g in groups:
        size = int(scores[g].shape[0])
        # Heads go one by one; channels and feed-forward units by round_to.
        step = 1 if str(g).startswith(HEADS) else round_to
        rounded = ops.cast(
            ops.ceil(ops.cast(counts[g], "float32") / step) * step, "int32"
        )
        count = ops.clip(rounded, min(step, size), size)
        keep[g] = mask_math.top_k_scores(scores[g], count)
    return keep


def prune_channels(
    model,
    pruning_schedule,
    *,
    importance="l2",
    allocation="uniform",
    round_to=1,
):
    """Prunes whole channels, units and filters of a model during training.

    Every channel group of the model (`shrink`'s dependency groups: the
    channels of layers joined by residual additions, a convolution with its
    BatchNormalization and depthwise followers) loses the same channels in
    all its layers. At the steps the schedule gives, the engine ranks each
    group's channels by `importance` and zeroes the weakest: the producing
    kernels' columns and biases, BatchNormalization's gamma and beta and
    depthwise kernels, so removed channels are exactly zero. Groups
    `shrink` keeps whole (reaching a model output, passing through a layer
    it cannot slice) are not pruned. After training, `strip_pruning` then
    `shrink` give a smaller dense model with the same outputs.

    Attention heads and feed-forward units of transformer layers are
    groups too: a Keras `MultiHeadAttention`/`GroupQueryAttention` in the
    graph, and every block of a KerasHub backbone or task (which keeps its
    class). A key/value head goes with its query heads.

    A schedule that is already at its final sparsity at step 0 (e.g.
    `ConstantSparsity(0.5, begin_step=0)`) prunes once, before the first
    update: one-shot channel pruning followed by fine-tuning.

    Args:
        model: A built Sequential or functional `keras.Model`, or a model
            holding transformer layers (a KerasHub backbone or task); not
            pruned.
        pruning_schedule: A `PruningSchedule`: the share of each group's
            channels removed (with `"global"`, of all channels).
        importance: How a channel is scored, summed over the group's
            producing kernels: `"l1"` (sum of |w|), `"l2"` (Euclidean norm
            of its weights), `"taylor"` (|w * g| summed over the channel,
            averaged over steps), or `"bn_gamma"` (|gamma| of the group's
            BatchNormalization; groups without one, heads and units, are
            left unpruned).
        allocation: `"uniform"` (each group at the schedule's sparsity) or
            `"global"` (one ranking over all groups, each channel's score
            divided by its group's mean).
        round_to: Keep a multiple of this many channels per group (8 or 16
            suit most accelerators); at least this many stay.

    Returns:
        A pruned copy of `model` (`PruneChannels` layers); `model` is not
        changed. It compiles with a `SparsityOptimizer` around whatever
        optimizer `compile` gets.

    Example:

    ```python
    pruned = sparsity.prune_channels(
        model, sparsity.ConstantSparsity(0.5, begin_step=0), round_to=8)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=2)
    small = sparsity.shrink(sparsity.strip_pruning(pruned))
    ```
    """
    _check_model(model)
    if not isinstance(pruning_schedule, PruningSchedule):
        raise TypeError(
            "Argument `pruning_schedule` must be a "
            "`keras_sparsity.PruningSchedule`, e.g. "
            "`ConstantSparsity(0.5, begin_step=0)`. Received: "
            f"pruning_schedule={pruning_schedule!r}"
        )
    _check_options(importance, allocation, round_to)
    options = dict(
        pruning_schedule=pruning_schedule,
        importance=importance,
        allocation=allocation,
        round_to=round_to,
    )
    if _compat.is_plain_graph(model):
        pruned = _prune_graph(model, options)
    else:
        pruned = _prune_blocks(model, options)
    install_engine_on_compile(pruned)
    return pruned


def _prune_graph(model, options):
    """A clone of a Sequential or functional model, its layers that write
    a prunable group (or hold heads or units) wrapped."""
    specs = channel_specs(model, options["importance"], options["round_to"])
    if not specs:
        raise ValueError(
            f"Model {model.name!r} has no channel group that can be pruned: "
            "every group reaches an output, passes through a layer that "
            "cannot be sliced, or has at most `round_to` channels. "
            f"`shrink(model, plan_only=True)` names each group's reason. "
            f"Received: round_to={options['round_to']}"
        )

    def clone_layer(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer, None
        spec = specs.get(id(layer))
        copy = (
            cloning.fresh_copy(layer) if spec else cloning.copy_or_share(layer)
        )
        if copy is layer:
            return layer, None
        weights = layer.get_weights()
        new = PruneChannels(copy, channels=spec, **options) if spec else copy
        return new, lambda: copy.set_weights(weights)

    return cloning.clone_graph(model, clone_layer)


def _prune_blocks(model, options):
    """A copy of a model without a plain graph (a KerasHub backbone or
    task, a subclassed transformer), its transformer layers wrapped: the
    attention heads and feed-forward units inside them are pruned."""
    if not _blocks(model, options):
        raise ValueError(
            "Argument `model` must be a Sequential or functional keras.Model, "
            "or hold attention layers or transformer feed-forward blocks: "
            "channel groups are found from the graph of layers, which a "
            f"{type(model).__name__} does not expose, and it has no heads or "
            "feed-forward units to prune. Received: "
            f"model={model.name!r} of type {type(model).__name__}"
        )
    copy = cloning.rebuilt_copy(model, "model")
    cloning.copy_weights(model, copy)
    for parent, block, specs in _blocks(copy, options):
        wrapper = PruneChannels(block, channels=specs, **options)
        wrapper.build()
        surgery.replace(parent, block, wrapper)
    return copy


def _blocks(model, options):
    """`(parent, layer, specs)` for the outermost layers of `model` with
    heads or feed-forward units to prune."""
    found = []
    for parent, layer in transformers.outermost(model):
        specs = block_specs(layer, options["importance"], options["round_to"])
        if specs:
            found.append((parent, layer, specs))
    return found


def channel_specs(model, importance, round_to):
    """`{id(layer): [ChannelSpec, ...]}` for the layers of `model` that
    write a prunable channel group."""
    graph = groups_lib.find_groups(model)
    prunable = {
        g.index for g in graph.groups
        if not g.reasons and g.producers and g.size > round_to
    }
    if importance == "bn_gamma":
        with_norm = set()
        for name, kind in graph.kinds.items():
            if kind == kinds.CHANNELWISE:
                for g, _ in graph.outputs[name].segments:
                    with_norm.add(g)
        prunable &= with_norm
    specs = {}
    for layer in model.layers:
        kind = graph.kinds.get(layer.name)
        channels = graph.outputs.get(layer.name)
        if channels is None or channels.positions != 1:
            continue
        segments = tuple(
            (g if g in prunable else None, n) for g, n in channels.segments
        )
        if all(g is None for g, _ in segments):
            continue
        found = [
            ChannelSpec(weight, axis, segments, scores)
            for weight, axis, scores in _masked_weights(layer, kind, importance)
        ]
        if found:
            specs[id(layer)] = found
    for layer in model.layers:
        if (
            id(layer) in specs
            or isinstance(layer, keras.Model)
            or graph.calls.get(id(layer)) != 1
        ):
            continue
        found = block_specs(layer, importance, round_to)
        if found:
            specs[id(layer)] = found
    return specs


def block_specs(layer, importance, round_to):
    """The `ChannelSpec`s of the attention heads and feed-forward units
    inside `layer` (`transformers`): a head's value projection and output
    rows, a unit's input columns (and biases) and output row. Zero, the
    head or unit is silent and `shrink` removes it. With grouped key/value
    heads, a key/value head goes with its query heads; with one (multi-
    query attention), query heads go one by one (query columns and output
    rows)."""
    if importance == "bn_gamma":
        return []
    found = []
    for attention in transformers.attentions(layer):
        if attention.num_units < 2:
            continue  # one head stays: nothing to choose
        key = HEADS + "/".join(filter(None, [layer.name, attention.path]))
        segments = ((key, attention.num_units),)
        if attention.by_query:  # the one key/value head stays
            found += _projection_specs(attention.query, segments, scores=True)
        else:
            found += _projection_specs(attention.value, segments, scores=True)
        found += _projection_specs(
            attention.output, segments, scores=True,
            repeat=attention.unit_repeat,
        )
    ffn = transformers.feed_forward(layer)
    if ffn is not None and ffn.units > round_to:
        segments = ((UNITS + layer.name, ffn.units),)
        for projection in (*ffn.inputs, ffn.output):
            found += _projection_specs(projection, segments, scores=True)
    return found


def _projection_specs(projection, segments, scores, repeat=1):
    """Kernel (scoring) and bias specs of one projection."""
    found = [
        ChannelSpec(
            transformers.join(projection.path, "kernel"), projection.axis,
            segments, scores, repeat,
        )
    ]
    if projection.bias_axis is not None:
        found.append(
            ChannelSpec(
                transformers.join(projection.path, "bias"),
                projection.bias_axis, segments, False, repeat,
            )
        )
    return found


def _masked_weights(layer, kind, importance):
    """`(attribute, channel axis, scores)` of the variables of `layer` that
    write its output channels."""
    by_norm = importance == "bn_gamma"
    found = []
    if kind == kinds.KERNEL:
        name = "pointwise_kernel" if kinds.is_separable(layer) else "kernel"
        axis = -2 if kinds.is_transposed(layer) else -1  # (..., out, in)
        found.append((name, axis, not by_norm))
    elif kind == kinds.DEPTHWISE:
        found.append(("kernel", -2, False))
    elif kind == kinds.CHANNELWISE:
        if layer.scale:
            found.append(("gamma", 0, by_norm))
        if layer.center:
            found.append(("beta", 0, False))
        return found
    else:
        return found
    if getattr(layer, "use_bias", False):
        found.append(("bias", 0, False))
    return found


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a built keras.Model. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    if _compat.is_plain_graph(model):
        groups_lib.check_graph_model(model, "")
    elif not model.built:
        raise ValueError(
            "Argument `model` must be built: call it on a batch of data "
            f"first. Received: model={model.name!r}"
        )
    from keras_sparsity.walk import pruning_wrappers

    if pruning_wrappers(model):
        raise ValueError(
            f"Argument `model` ({model.name!r}) is already pruned: call "
            "`strip_pruning` first."
        )


def _check_options(importance, allocation, round_to):
    if importance not in IMPORTANCES:
        raise ValueError(
            f"Argument `importance` must be one of {IMPORTANCES}. Received: "
            f"importance={importance!r}"
        )
    if allocation not in ALLOCATIONS:
        raise ValueError(
            f"Argument `allocation` must be one of {ALLOCATIONS}. Received: "
            f"allocation={allocation!r}"
        )
    if (
        not isinstance(round_to, numbers.Integral)
        or isinstance(round_to, bool)
        or round_to < 1
    ):
        raise ValueError(
            "Argument `round_to` must be an integer >= 1 (e.g. 8 to keep "
            f"channel counts multiples of 8). Received: round_to={round_to!r}"
        )
