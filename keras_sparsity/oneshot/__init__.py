"""One-shot pruning of trained models from calibration data.

`prune` applies magnitude, Wanda or SparseGPT pruning block by block,
unstructured or N:M, with uniform or OWL sparsity, to Dense, EinsumDense,
Conv1D and Conv2D kernels, and on request returns a `OneShotSummary` (per
layer: exact sparsity, reconstruction error, time); `perplexity` measures
a causal language model before and after. `oneshot.quantization` reads
pruned kernels after Keras' own `Model.quantize`.
"""

from keras_sparsity.oneshot.owl import OutlierWeighted
from keras_sparsity.oneshot.perplexity import perplexity
from keras_sparsity.oneshot.recovery import FrozenMasks
from keras_sparsity.oneshot.sequential import prune
from keras_sparsity.oneshot.summary import BlockResult
from keras_sparsity.oneshot.summary import LayerResult
from keras_sparsity.oneshot.summary import OneShotSummary

__all__ = [
    "BlockResult",
    "FrozenMasks",
    "LayerResult",
    "OneShotSummary",
    "OutlierWeighted",
    "perplexity",
    "prune",
]
