"""Masks kept attached after one-shot pruning, for recovery fine-tuning.

`attach_masks` wraps the pruned model with `prune_low_magnitude` under a
`FrozenMasks` schedule, which never recomputes a mask, and sets each mask
to the one-shot mask: during `fit` the optimizer multiplies every kernel by
its fixed mask after each step, so the pruned weights stay exactly zero.
"""

import keras
from keras import ops

from keras_sparsity import _compat
from keras_sparsity.prune import prune_low_magnitude
from keras_sparsity.schedules import PruningSchedule
from keras_sparsity.walk import pruning_wrappers


@keras.saving.register_keras_serializable(package="keras_sparsity")
class FrozenMasks(PruningSchedule):
    """Never updates a mask: the masks stay as they were set.

    For recovery training after one-shot pruning (`oneshot.prune(...,
    keep_masks=True)` uses it): each kernel stays multiplied by its mask
    after every optimizer step. It has no `begin_step`, so the optimizer
    never prunes on its own.

    Example: `sparsity.prune_low_magnitude(model, oneshot.FrozenMasks())`
    """

    def __call__(self, step):
        return ops.less(ops.cast(step, "int32"), 0), ops.zeros((), "float32")

    def get_config(self):
        return {}


def attach_masks(model, keeps):
    """`model` wrapped for pruning with fixed masks (in place unless it is a
    plain Sequential or functional model, which is cloned).

    Args:
        model: The one-shot pruned model.
        keeps: Dict from `id(layer)` of `model`'s pruned layers to their
            `(layer name, kernel-shaped 0/1 mask)`.
    """
    by_name = {name: keep for name, keep in keeps.values()}
    plain = _compat.is_plain_graph(model)
    wrapped = prune_low_magnitude(
        model, pruning_schedule=FrozenMasks(), inplace=not plain
    )
    for wrapper in pruning_wrappers(wrapped):
        if plain:
            keep = by_name.get(wrapper.layer.name)
        else:
            keep = keeps.get(id(wrapper.layer), (None, None))[1]
        if keep is not None:
            wrapper.masks[0].assign(keep)
    return wrapped
