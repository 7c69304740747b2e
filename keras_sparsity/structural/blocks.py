"""`shrink` for attention heads and feed-forward units.

The heads and units that `transformers` finds silent go; the layer that
holds them is rebuilt from a config that says how many stay. A config
holds one count for all the layers it describes (a KerasHub backbone's
`num_query_heads`, `intermediate_dim`), so every one of them keeps the
largest number of live heads (or units) among them, topped up with silent
ones: the outputs stay the same, and the saving is that of the least
pruned layer. A config that cannot say it (KerasHub's GPT-2 and BERT
derive the head size from `hidden_dim // num_heads`) keeps the heads, and
the plan says why.
"""

import dataclasses

import numpy as np

from keras_sparsity.structural import plan as plan_lib
from keras_sparsity.structural import transformers


@dataclasses.dataclass
class _Part:
    """Heads of one attention layer, or units of one feed-forward block."""

    block: object
    name: str
    item: object  # transformers.Attention or FeedForward
    silent: np.ndarray

    @property
    def is_heads(self):
        return isinstance(self.item, transformers.Attention)

    @property
    def size(self):
        """Heads that can go one by one, or units."""
        return self.item.num_units if self.is_heads else self.item.units


def parts(blocks):
    """The heads and units of `blocks` (layers), with their silent ones."""
    found = []
    for block in blocks:
        for attention in transformers.attentions(block):
            found.append(
                _Part(
                    block,
                    transformers.join(block.name, attention.path),
                    attention,
                    transformers.silent_heads(block, attention),
                )
            )
        ffn = transformers.feed_forward(block)
        if ffn is not None:
            found.append(
                _Part(
                    block, block.name, ffn,
                    transformers.silent_units(block, ffn),
                )
            )
    return found


def decide(found, config):
    """What stays of the parts described by one `config`.

    Returns `(config update, cuts, plan groups)`: the keys to change,
    `(block, Projection, kept indices)` for `transformers.sliced_weights`,
    and one `ChannelGroup` per part.
    """
    update, cuts, groups = {}, [], []
    for is_heads in (True, False):
        chosen = [p for p in found if p.is_heads == is_heads]
        if not chosen:
            continue
        count = max(max(p.size - len(p.silent) for p in chosen), 1)
        keys, why = (
            _head_keys(config, chosen, count)
            if is_heads
            else _unit_keys(config, chosen, count)
        )
        for part in chosen:
            keep, reasons = _keep(part, count if keys else part.size)
            if why:
                reasons.append(why)
            elif count > part.size - len(part.silent) and len(part.silent):
                reasons.append(
                    f"{count - (part.size - len(part.silent))} silent kept: "
                    "the layers of one config keep as many as the least "
                    "pruned one"
                )
            if keys and len(keep) < part.size:
                cuts += [
                    (part.block, projection, kept)
                    for projection, kept in (
                        transformers.head_slices(part.item, keep)
                        if is_heads
                        else transformers.unit_slices(part.item, keep)
                    )
                ]
            groups.append(_group(part, keep, reasons))
        if keys and count < chosen[0].size:
            update.update(keys)
    return update, cuts, groups


def _keep(part, count):
    """Live indices, topped up with the lowest silent ones to `count`."""
    live = np.setdiff1d(np.arange(part.size), part.silent)
    extra = part.silent[: max(count - len(live), 0)]
    keep = np.sort(np.concatenate([live, extra])).astype(int)
    if len(part.silent):
        reasons = []
    elif part.is_heads and part.size == 1:
        reasons = ["a single head"]
    else:
        reasons = [
            "no head is silent (value projection or output rows all zero)"
            if part.is_heads
            else "no unit is silent (input columns or output row all zero)"
        ]
    return keep, reasons


def _head_keys(config, chosen, count):
    """The config keys for `count` key/value heads, or a reason."""
    first = chosen[0].item
    if len({(p.size, p.item.unit_repeat) for p in chosen}) > 1:
        return None, "its attention layers differ in heads"
    if "num_key_value_heads" in config and "head_dim" in config:
        return {
            "num_query_heads": count * first.unit_repeat,
            "num_key_value_heads": 1 if first.by_query else count,
        }, None
    if "num_heads" in config and "key_dim" in config and first.repeat == 1:
        return {"num_heads": count}, None
    return None, (
        "its config derives the head size from the number of heads "
        "(hidden_dim // num_heads), so fewer heads cannot be described"
    )


def _unit_keys(config, chosen, count):
    """The config keys for `count` units, or a reason."""
    sizes = {p.size for p in chosen}
    total = config.get("intermediate_dim")
    if not isinstance(total, int) or len(sizes) > 1 or total % sizes.pop():
        return None, "its config has no `intermediate_dim` for these units"
    return {"intermediate_dim": total // chosen[0].size * count}, None


def _group(part, keep, reasons):
    if part.is_heads:  # in query heads, as the layer counts them
        repeat = part.item.unit_repeat
        keep = (keep[:, None] * repeat + np.arange(repeat)).ravel()
        size = part.size * repeat
    else:
        size = part.size
    return plan_lib.ChannelGroup(
        producers=(part.name,), members=(), consumers=(),
        num_channels=size, kept=tuple(int(i) for i in keep),
        reasons=tuple(reasons), unit="heads" if part.is_heads else "units",
    )
