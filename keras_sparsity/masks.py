"""Mask math: scores and a target sparsity in, an exact 0/1 mask out.

Pure `keras.ops` functions, traceable under `jit` on every backend. The
sparsity may be a traced scalar, so the number of kept weights is dynamic;
instead of a full sort the k-th largest score is found by bisection on the
scores' float32 bit patterns (31 passes of compare-and-count), and ties at
the threshold are broken by flat index, so every backend returns the same
mask bit for bit.
"""

import math

from keras import ops

# Non-negative float32 values order like their int32 bit patterns; +inf is
# 0x7F800000, so every non-NaN score lies in [0, _BITS_HIGH].
_BITS_HIGH = 0x7F800000
_BISECTION_STEPS = math.ceil(math.log2(_BITS_HIGH + 1))


def keep_count(size, sparsity):
    """Number of weights a mask keeps: `round(size * (1 - sparsity))`, >= 1.

    Computed in float32 with round-half-to-even, as TFMOT does, so
    `keep_count(6, 0.25)` is 4 and `keep_count(10, 0.15)` is 8
    (`1 - 0.15` is 0.84999996 in float32).

    Args:
        size: Python int, the number of weights.
        sparsity: Float scalar (Python or tensor), the fraction to zero.

    Returns:
        An int32 scalar tensor in `[1, size]`.
    """
    kept = ops.round(
        ops.cast(size, "float32") * (1.0 - ops.cast(sparsity, "float32"))
    )
    return ops.cast(ops.clip(kept, 1.0, float(size)), "int32")


def top_k_mask(scores, k):
    """A float32 mask of `scores`' shape with ones at its `k` largest entries.

    Exactly `k` ones: among entries equal to the k-th largest score, those
    with the lowest flat (row-major) index are kept.

    Args:
        scores: Non-negative float tensor (e.g. `abs(weights)`).
        k: Int scalar (Python or tensor) in `[1, size]`.
    """
    shape = scores.shape
    bits = ops.view(ops.reshape(ops.cast(scores, "float32"), (-1,)), "int32")
    k = ops.cast(k, "int32")

    def count_at_least(threshold):
        return ops.sum(ops.cast(ops.greater_equal(bits, threshold), "int32"))

    def bisect(_, bounds):
        # Invariant: count(bits >= low) >= k > count(bits >= high + 1).
        low, high = bounds
        mid = low + (high - low + 1) // 2
        enough = ops.greater_equal(count_at_least(mid), k)
        return (
            ops.where(enough, mid, low),
            ops.where(enough, high, mid - 1),
        )

    bounds = (
        ops.convert_to_tensor(0, "int32"),
        ops.convert_to_tensor(_BITS_HIGH, "int32"),
    )
    threshold, _ = ops.fori_loop(0, _BISECTION_STEPS, bisect, bounds)
    above = ops.greater(bits, threshold)
    tied = ops.equal(bits, threshold)
    missing = k - ops.sum(ops.cast(above, "int32"))
    tie_rank = ops.cumsum(ops.cast(tied, "int32"))
    keep = ops.logical_or(
        above, ops.logical_and(tied, ops.less_equal(tie_rank, missing))
    )
    return ops.reshape(ops.cast(keep, "float32"), shape)


def magnitude_mask(weights, sparsity):
    """Keeps the largest-magnitude `round(size * (1 - sparsity))` weights.

    Args:
        weights: Float tensor of any shape.
        sparsity: Float scalar in [0, 1) (Python or tensor).

    Returns:
        A float32 0/1 tensor of `weights`' shape with exactly
        `keep_count(size, sparsity)` ones.

    Example:

    >>> magnitude_mask(ops.convert_to_tensor([3.0, -3.0, 1.0, 2.0]), 0.5)
    [1., 1., 0., 0.]
    """
    size = math.prod(weights.shape)
    return top_k_mask(ops.abs(weights), keep_count(size, sparsity))
