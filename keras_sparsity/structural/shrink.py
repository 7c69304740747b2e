"""`shrink`: a model whose some channels are zero, rebuilt smaller."""

import dataclasses

import keras
import numpy as np

from keras_sparsity import _compat
from keras_sparsity import cloning
from keras_sparsity import walk
from keras_sparsity.strip import strip_pruning
from keras_sparsity.structural import blocks
from keras_sparsity.structural import groups as groups_lib
from keras_sparsity.structural import kinds
from keras_sparsity.structural import plan as plan_lib
from keras_sparsity.structural import slicing
from keras_sparsity.structural import transformers


def shrink(model, *, plan_only=False, return_plan=False):
    """Rebuilds a model without its all-zero channels, units and filters.

    Channel pruning leaves whole output channels (Dense units, Conv
    filters) at zero; cutting them away leaves a smaller dense model that
    every runtime runs faster, with the same outputs (up to float
    rounding). The channels that must go together are found from the
    graph, as Torch-Pruning's DepGraph does (Fang et al., 2023):

    * a Dense, Conv1D/2D/3D or SeparableConv1D/2D layer's output channels
      start a group; its consumers (the next Dense/Conv layers) lose the
      matching input rows of their kernels;
    * BatchNormalization, DepthwiseConv (a depthwise channel follows its
      input), activations, dropout, pooling and global pooling carry a
      channel through;
    * `Add`, `Subtract`, `Multiply`, `Maximum`, `Minimum` and `Average`
      join their inputs' groups: a residual block loses a channel only
      where every branch has it zero;
    * `Concatenate` on the channel axis lays each input's group at its
      offset; a `Flatten` after a convolution spreads each channel over
      the spatial positions of the next Dense kernel's rows.

    A channel goes when every kernel reading it sees a constant: zero, or
    a zero filter's bias (then BatchNormalization and an activation),
    which is folded into the reader's bias (exact for Dense and 'valid'
    convolutions; a 'same' convolution or a reader without bias keeps a
    nonzero constant channel). Groups that reach a model output, or pass
    through a layer shrink cannot slice (LayerNormalization or
    GroupNormalization over the channels, a Reshape, a nested model, a
    channels_first layer, a shared layer, ...), are kept whole, with the
    reason in the plan. At least one channel of a group stays.

    Attention heads and feed-forward units of transformer layers go when
    silent (`transformers`): a Keras `MultiHeadAttention` or
    `GroupQueryAttention` is rebuilt with fewer heads; a KerasHub backbone
    or task is rebuilt, same class, from its config with the new
    `intermediate_dim` (and head counts where the config has a `head_dim`),
    every block keeping as many as the least pruned one.

    A pruned model (`PruneLowMagnitude` layers) is stripped first; `model`
    itself is never changed. The result is a plain, uncompiled model of
    the same class (Sequential or functional) built from `model`'s config
    with new `units`/`filters`, which saves and loads as an ordinary
    `.keras` file (a KerasHub model is compiled as `model` was).

    Args:
        model: A built Sequential or functional `keras.Model`, or a model
            holding transformer layers such as a KerasHub backbone or task
            (pruned, stripped, or loaded from a file).
        plan_only: If True, return the `ShrinkPlan` without building the
            smaller model.
        return_plan: If True, return `(smaller_model, plan)`.

    Returns:
        The smaller model; the `ShrinkPlan` if `plan_only`; or both, as
        `(model, plan)`, if `return_plan`.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(4),
    ])
    kernel, bias = model.layers[0].get_weights()
    kernel[:, :12] = 0.0
    bias[:12] = 0.0
    model.layers[0].set_weights([kernel, bias])
    print(shrink(model, plan_only=True))
    smaller = shrink(model)  # Dense(4) then Dense(4)
    ```
    """
    _check_arguments(model, plan_only, return_plan)
    if walk.pruning_wrappers(model):
        model = strip_pruning(model)
    if not _compat.is_plain_graph(model):
        return _shrink_by_config(model, plan_only, return_plan)
    graph = groups_lib.find_groups(model)
    decisions = {}
    described = []
    for group in graph.groups:
        keep, reasons = plan_lib.kept_channels(group)
        decisions[group.index] = keep
        described.append(plan_lib.describe(group, keep, reasons))
    edits = _edits(model, graph, decisions)
    for layer in filter(transformers.holds_parts, model.layers):
        found = blocks.parts([layer])
        if graph.calls.get(id(layer), 0) != 1:
            _, _, groups = blocks.decide(found, {})
            described += [
                dataclasses.replace(
                    g, kept=tuple(range(g.num_channels)),
                    reasons=("is called more than once",),
                )
                for g in groups
            ]
            continue
        update, cuts, groups = blocks.decide(found, layer.get_config())
        described += groups
        if cuts:
            edits[layer.name] = (
                update, transformers.sliced_weights(layer, cuts)
            )
    plan = plan_lib.ShrinkPlan(
        model=model.name,
        groups=tuple(described),
        num_parameters=int(model.count_params()),
        num_parameters_after=_count_after(model, edits),
    )
    if plan_only:
        return plan
    smaller = _rebuild(model, edits)
    return (smaller, plan) if return_plan else smaller


def _shrink_by_config(model, plan_only, return_plan):
    """A model without a plain graph (a KerasHub backbone or task): its
    transformer layers lose their silent heads and units, and the model is
    rebuilt, same class, from its config with the new counts."""
    layers = [layer for _, layer in transformers.outermost(model)]
    if not layers:
        groups_lib.check_graph_model(model, _WHY_GRAPH)  # raises
    config = model.get_config()
    owner = _counts_config(config)
    update, cuts, groups = blocks.decide(blocks.parts(layers), owner)
    weights = transformers.sliced_weights(model, cuts)
    plan = plan_lib.ShrinkPlan(
        model=model.name,
        groups=tuple(groups),
        num_parameters=int(model.count_params()),
        num_parameters_after=sum(int(w.size) for w in weights),
    )
    if plan_only:
        return plan
    owner.update(update)
    smaller = cloning.rebuilt_copy(model, "model", config=config)
    smaller.set_weights(weights)
    return (smaller, plan) if return_plan else smaller


def _counts_config(config):
    """The dict of `config` that holds the head and unit counts: the
    model's own, or its backbone's (a KerasHub task)."""
    backbone = config.get("backbone")
    if isinstance(backbone, dict) and isinstance(backbone.get("config"), dict):
        return backbone["config"]
    return config


def _check_arguments(model, plan_only, return_plan):
    for name, value in (("plan_only", plan_only), ("return_plan", return_plan)):
        if not isinstance(value, bool):
            raise TypeError(
                f"Argument `{name}` must be True or False. Received: "
                f"{name}={value!r}"
            )
    if plan_only and return_plan:
        raise ValueError(
            "Arguments `plan_only` and `return_plan` cannot both be True: "
            "`plan_only=True` returns the plan alone. Received: "
            "plan_only=True, return_plan=True"
        )
    if not isinstance(model, keras.Model) or _compat.is_plain_graph(model):
        groups_lib.check_graph_model(model, _WHY_GRAPH)


_WHY_GRAPH = (
    "shrink follows the graph of layers and rebuilds the model from its "
    "config, which a subclassed model (or a subclass of Functional) does "
    "not have; in one, only the attention heads and feed-forward units of "
    "transformer layers are cut, and it has none. Rebuild it with the "
    "functional API first."
)


def _edits(model, graph, decisions):
    """`{layer name: (config update, new weights)}` of the layers that
    change."""
    edits = {}
    for layer in model.layers:
        kind = graph.kinds.get(layer.name)
        if kind == kinds.KERNEL:
            edit = _kernel_edit(layer, graph, decisions)
        elif kind in (kinds.DEPTHWISE, kinds.CHANNELWISE):
            keep = _tensor_keep(graph.inputs[layer.name], decisions)
            edit = None
            if len(keep) < graph.inputs[layer.name].num_channels:
                edit = ({}, slicing.channel_weights(layer, keep))
        else:
            edit = None
        if edit is not None:
            edits[layer.name] = edit
    return edits


def _kernel_edit(layer, graph, decisions):
    channels = graph.inputs[layer.name]
    in_keep = _tensor_keep(channels, decisions)
    out = graph.outputs[layer.name]
    out_keep = _tensor_keep(out, decisions)
    if (
        len(in_keep) == channels.num_channels
        and len(out_keep) == out.num_channels
    ):
        return None
    weights = slicing.kernel_weights(
        layer, in_keep, channels.positions, out_keep, channels.values
    )
    update = {}
    if len(out_keep) < out.num_channels:
        update = {kinds.output_units_key(layer): int(len(out_keep))}
    return update, weights


def _tensor_keep(channels, decisions):
    """Indices along a tensor's channel axis that stay."""
    kept, offset = [], 0
    for group, length in channels.segments:
        if group is None:
            kept.append(np.arange(length) + offset)
        else:
            kept.append(np.asarray(decisions[group]) + offset)
        offset += length
    if not kept:
        return np.arange(0)
    return np.concatenate(kept).astype(int)


def _count_after(model, edits):
    total = 0
    for layer in model.layers:
        if layer.name in edits:
            total += sum(int(w.size) for w in edits[layer.name][1])
        else:
            total += int(layer.count_params())
    return total


def _rebuild(model, edits):
    """A new model of `model`'s class from its config, with the edited
    `units`/`filters`, holding the cut weights."""
    config = model.get_config()
    for entry in config["layers"]:
        # Rebuilt from the new shapes as the graph calls each layer.
        entry.pop("build_config", None)
        update = edits.get(entry["config"].get("name"))
        if update:
            entry["config"].update(update[0])
    smaller = type(model).from_config(config)
    for layer in model.layers:
        target = smaller.get_layer(layer.name)
        if layer.name in edits:
            target.set_weights(edits[layer.name][1])
        else:
            target.set_weights(layer.get_weights())
    return smaller
