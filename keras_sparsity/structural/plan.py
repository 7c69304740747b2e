"""The shrink plan: each channel group, what it keeps, and why.

`make_plan` decides, per group found by `groups.find_groups`, which
channels go: a channel goes when every layer that reads it through kernel
rows sees a constant there, and that constant is zero or can be folded
into the reader's bias. A group that reaches a model output, or passes
through a layer shrink cannot slice, is kept whole with the reason.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """One dependency group of channels in a shrink plan.

    `producers` are the layers whose output channels (units, filters) the
    group is; `members` carry them channel by channel (BatchNormalization,
    depthwise convolutions, activations, pooling, merges, Concatenate,
    Flatten); `consumers` read them through their kernel rows. `kept` lists
    the indices of the channels that stay, of `num_channels`; `reasons`
    says why channels stay: why the group is kept whole, or which
    consumers could not fold a constant channel into their bias. `unit` is
    `"channels"`, `"heads"` for the (query) heads of one attention layer,
    or `"units"` for the hidden units of one feed-forward block (its only
    producer).

    Example: `[(g.producers, g.num_kept) for g in plan.groups]`
    """

    producers: tuple
    members: tuple
    consumers: tuple
    num_channels: int
    kept: tuple
    reasons: tuple
    unit: str = "channels"

    @property
    def num_kept(self):
        """How many channels stay."""
        return len(self.kept)

    @property
    def removed(self):
        """Indices of the channels that go."""
        return tuple(sorted(set(range(self.num_channels)) - set(self.kept)))

    def __str__(self):
        lines = [
            f"{' + '.join(self.producers)}: "
            f"{self.num_channels} -> {self.num_kept} {self.unit}"
        ]
        if self.members:
            lines.append(f"  members:   {', '.join(self.members)}")
        if self.consumers:
            lines.append(f"  consumers: {', '.join(self.consumers)}")
        for reason in self.reasons:
            lines.append(f"  kept: {reason}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ShrinkPlan:
    """What `shrink` removes from a model, group by group.

    `num_parameters` counts the model's weights now and
    `num_parameters_after` those of the shrunk model. `print(plan)` shows
    each group: its producers, members and consumers, its channels before
    and after, and why a kept group is kept.

    Example: `print(keras_sparsity.structural.shrink(model, plan_only=True))`
    """

    model: str
    groups: tuple
    num_parameters: int
    num_parameters_after: int

    @property
    def num_removed(self):
        """Channels removed over all groups (attention heads and
        feed-forward units not counted: see `num_heads_removed` and
        `num_units_removed`)."""
        return self._removed("channels")

    @property
    def num_heads_removed(self):
        """Attention (query) heads removed over all attention layers."""
        return self._removed("heads")

    @property
    def num_units_removed(self):
        """Feed-forward units removed over all transformer layers."""
        return self._removed("units")

    def _removed(self, unit):
        return sum(
            g.num_channels - g.num_kept for g in self.groups if g.unit == unit
        )

    def __str__(self):
        heads = "".join(
            f", {self._removed(unit)} {unit}"
            for unit in ("heads", "units")
            if any(g.unit == unit for g in self.groups)
        )
        head = (
            f"Shrink plan for {self.model!r}: {len(self.groups)} groups, "
            f"{self.num_removed} channels{heads} removed, parameters "
            f"{self.num_parameters} -> {self.num_parameters_after}"
        )
        return "\n".join([head] + [str(g) for g in self.groups])


def kept_channels(group):
    """The sorted indices of `group`'s channels that must stay, and the
    reasons it is kept whole (empty unless every channel stays)."""
    if group.reasons:
        return np.arange(group.size), list(group.reasons)
    removable = np.ones(group.size, bool)
    for read in group.reads:
        constant = ~np.isnan(read.values)
        zero = constant & (read.values == 0)
        removable &= zero | (constant & read.folds)
    if not removable.any():
        return np.arange(group.size), [
            "no channel is constant (zero kernel column) where it is read"
        ]
    keep = np.flatnonzero(~removable)
    if not len(keep):
        keep = np.array([0])  # a layer keeps at least one channel
    return keep, _fold_reasons(group, removable)


def _fold_reasons(group, removable):
    """Notes on constant channels kept because a reader cannot fold them."""
    blocked = sorted(
        {
            read.layer
            for read in group.reads
            if not read.folds
            and np.any(~np.isnan(read.values) & (read.values != 0))
        }
    )
    if not blocked:
        return []
    return [
        "constant nonzero channels kept: "
        + ", ".join(blocked)
        + " cannot fold them into a bias (no bias, or 'same' padding)"
    ]


def describe(group, keep, reasons):
    """The public `ChannelGroup` of a found group and its decision."""
    return ChannelGroup(
        producers=tuple(group.producers),
        members=tuple(group.members),
        consumers=tuple(group.consumers),
        num_channels=group.size,
        kept=tuple(int(i) for i in keep),
        reasons=tuple(reasons),
    )
