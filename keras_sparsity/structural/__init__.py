"""Structural pruning: removing whole channels, units and filters."""

from keras_sparsity.structural.channels import PruneChannels
from keras_sparsity.structural.channels import prune_channels
from keras_sparsity.structural.plan import ChannelGroup
from keras_sparsity.structural.plan import ShrinkPlan
from keras_sparsity.structural.shrink import shrink

__all__ = [
    "ChannelGroup",
    "PruneChannels",
    "ShrinkPlan",
    "prune_channels",
    "shrink",
]
