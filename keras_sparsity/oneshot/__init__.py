"""One-shot pruning of trained models from calibration data.

`prune` applies magnitude, Wanda or SparseGPT pruning block by block,
unstructured or N:M, with uniform or OWL sparsity; `perplexity` measures a
causal language model before and after.
"""

from keras_sparsity.oneshot.owl import OutlierWeighted
from keras_sparsity.oneshot.perplexity import perplexity
from keras_sparsity.oneshot.recovery import FrozenMasks
from keras_sparsity.oneshot.sequential import prune

__all__ = ["FrozenMasks", "OutlierWeighted", "perplexity", "prune"]
