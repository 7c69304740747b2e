"""Weight pruning for Keras 3 on TensorFlow, JAX and PyTorch.

A drop-in successor to `tfmot.sparsity.keras`: the same names, arguments
and defaults, on every Keras backend.
"""

from keras_sparsity import oneshot
from keras_sparsity import structural
from keras_sparsity.callbacks import UpdatePruningStep
from keras_sparsity.compressed import load_compressed
from keras_sparsity.compressed import save_compressed
from keras_sparsity.criteria import Criterion
from keras_sparsity.criteria import Magnitude
from keras_sparsity.criteria import Movement
from keras_sparsity.criteria import Saliency
from keras_sparsity.dst import SET
from keras_sparsity.dst import RigL
from keras_sparsity.dst import StaticSparse
from keras_sparsity.engine import SparsityOptimizer
from keras_sparsity.litert import describe_litert
from keras_sparsity.litert import export_litert
from keras_sparsity.policy import PruneForLatencyOnXNNPack
from keras_sparsity.policy import PruningPolicy
from keras_sparsity.prune import prune_low_magnitude
from keras_sparsity.prune import prune_scope
from keras_sparsity.registry import PrunableLayer
from keras_sparsity.report import report
from keras_sparsity.schedules import ConstantSparsity
from keras_sparsity.schedules import PolynomialDecay
from keras_sparsity.schedules import PruningSchedule
from keras_sparsity.strip import strip_pruning
from keras_sparsity.structural import PruneChannels
from keras_sparsity.structural import prune_channels
from keras_sparsity.structural import shrink
from keras_sparsity.summaries import PruningSummaries
from keras_sparsity.walk import unpruned_layers
from keras_sparsity.wrapper import PruneLowMagnitude

__all__ = [
    "ConstantSparsity",
    "Criterion",
    "Magnitude",
    "Movement",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneChannels",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "RigL",
    "SET",
    "Saliency",
    "SparsityOptimizer",
    "StaticSparse",
    "UpdatePruningStep",
    "describe_litert",
    "export_litert",
    "load_compressed",
    "oneshot",
    "prune_channels",
    "prune_low_magnitude",
    "prune_scope",
    "report",
    "save_compressed",
    "shrink",
    "strip_pruning",
    "structural",
    "unpruned_layers",
]
