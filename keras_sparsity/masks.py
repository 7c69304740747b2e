"""Mask math: scores and a target sparsity in, an exact 0/1 mask out.

Pure `keras.ops` functions, traceable under `jit` on every backend. The
sparsity may be a traced scalar, so the number of kept weights is dynamic;
instead of a full sort the k-th largest score is found by bisection on the
scores' float32 bit patterns (31 passes of compare-and-count), and ties at
the threshold are broken by flat index, so every backend returns the same
mask bit for bit.

Three patterns share that ranking: single weights (`magnitude_mask`),
blocks of the kernel's 2-D view (`block_mask`) and gradual N:M groups along
the reduction axis (`m_by_n_mask`).
"""

import math

import keras
from keras import ops

# Non-negative float32 values order like their int32 bit patterns; +inf is
# 0x7F800000, so every non-NaN score lies in [0, _BITS_HIGH].
_BITS_HIGH = 0x7F800000
_BISECTION_STEPS = math.ceil(math.log2(_BITS_HIGH + 1))
POOLING_TYPES = ("AVG", "MAX")


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
    bits = ops.view(ops.reshape(ops.cast(scores, "float32"), (-1,)), "int32")
    keep = _top_k_keys(bits, k)
    return ops.reshape(ops.cast(keep, "float32"), scores.shape)


def _top_k_keys(keys, k):
    """Boolean flags at the `k` largest of flat int32 `keys`.

    `keys` lie in `[0, _BITS_HIGH]` and `k` in `[0, size]`; ties at the k-th
    largest key go to the lowest indices.
    """
    k = ops.cast(k, "int32")
    state = (
        ops.convert_to_tensor(0, "int32"),
        ops.convert_to_tensor(_BITS_HIGH, "int32"),
        keys,
        k,
    )
    threshold, _, _, _ = ops.fori_loop(0, _BISECTION_STEPS, _bisect, state)
    above = ops.greater(keys, threshold)
    tied = ops.equal(keys, threshold)
    missing = k - ops.sum(ops.cast(above, "int32"))
    tie_rank = ops.cumsum(ops.cast(tied, "int32"))
    return ops.logical_or(
        above, ops.logical_and(tied, ops.less_equal(tie_rank, missing))
    )


def _bisect(_, state):
    """One halving of `[low, high]`, the range holding the k-th largest key.

    Invariant: `count(keys >= low) >= k > count(keys >= high + 1)`. A
    module-level body (not a closure) lets eager JAX reuse its compiled loop.
    """
    low, high, keys, k = state
    mid = low + (high - low + 1) // 2
    count = _count_true(ops.greater_equal(keys, mid))
    enough = ops.greater_equal(count, k)
    return (
        ops.where(enough, mid, low),
        ops.where(enough, high, mid - 1),
        keys,
        k,
    )


def _count_true(flags):
    """The number of True flags, as int32, by the fastest route per backend:
    eager PyTorch's `count_nonzero` is ~7x faster than a cast and a sum,
    which XLA and TensorFlow fuse better."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.count_nonzero(flags).to(torch.int32)
    return ops.sum(ops.cast(flags, "int32"))


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


def block_mask(weights, sparsity, block_size, pooling="AVG"):
    """Keeps the `round(num_blocks * (1 - sparsity))` strongest blocks.

    The kernel is viewed as a matrix: rows run over all axes but the last
    (row-major, so for a Conv kernel `(kh, kw, in, out)` consecutive rows
    run along `in`), columns over the last axis. The matrix is cut into
    `block_size` blocks, edge blocks holding only the real weights that
    fall in them, and each block is scored by pooling `|w|`, as TFMOT's
    block sparsity does (its `'SAME'`-padded pools).

    Args:
        weights: Float tensor of any shape.
        sparsity: Float scalar in [0, 1) (Python or tensor), the fraction
            of blocks to zero.
        block_size: Pair of Python ints `(block_rows, block_cols)`.
        pooling: `"AVG"` (mean `|w|` over the block's real weights) or
            `"MAX"` (largest `|w|`).

    Returns:
        A float32 0/1 tensor of `weights`' shape, constant over each block,
        with exactly `keep_count(num_blocks, sparsity)` blocks of ones.

    Example:

    >>> w = ops.convert_to_tensor([[1.0, 2.0, 10.0, 1.0], [5.0, 5.0, 0.0, 3.0]])
    >>> block_mask(w, 0.5, (1, 2))
    [[0., 0., 1., 1.], [1., 1., 0., 0.]]
    """
    if pooling not in POOLING_TYPES:
        raise ValueError(
            "Argument `pooling` must be 'AVG' or 'MAX'. "
            f"Received: pooling={pooling!r}"
        )
    shape = tuple(weights.shape)
    rows, cols = _matrix_shape(shape)
    block_rows, block_cols = block_size
    num_block_rows = -(-rows // block_rows)
    num_block_cols = -(-cols // block_cols)
    magnitudes = ops.reshape(
        ops.abs(ops.cast(weights, "float32")), (rows, cols)
    )
    magnitudes = ops.pad(
        magnitudes,
        (
            (0, num_block_rows * block_rows - rows),
            (0, num_block_cols * block_cols - cols),
        ),
    )
    blocks = ops.reshape(
        magnitudes, (num_block_rows, block_rows, num_block_cols, block_cols)
    )
    if pooling == "MAX":
        pooled = ops.max(blocks, axis=(1, 3))
    else:
        pooled = ops.sum(blocks, axis=(1, 3)) / _block_sizes(
            rows, cols, block_rows, block_cols
        )
    num_blocks = num_block_rows * num_block_cols
    kept = top_k_mask(pooled, keep_count(num_blocks, sparsity))
    kept = ops.repeat(ops.repeat(kept, block_rows, axis=0), block_cols, axis=1)
    return ops.reshape(ops.slice(kept, (0, 0), (rows, cols)), shape)


def m_by_n_mask(weights, sparsity, m_by_n):
    """Zeros `m` of every `n` consecutive weights along the input axis.

    The kernel is viewed as `(outer, in, out)`: `in` is the second-to-last
    axis (the reduction axis of a Dense kernel `(in, out)` or a Conv kernel
    `(..., in, out)`), and a group is `n` consecutive weights along it for
    one position of the other axes. A full group keeps its `n - m`
    largest-magnitude weights (ties: the lowest index); a last, partial
    group of `r` weights keeps `min(r, n - m)` of them, as in TFMOT.

    The pattern ramps up with `sparsity`: `round(num_groups * min(1,
    sparsity * n / m))` groups are made m:n, those whose pruned weights
    have the smallest total magnitude (ties: the lowest flat group index),
    and the others stay dense. From `sparsity = m / n` on every group is
    m:n. A partial group with `r <= n - m` loses nothing, so it costs 0 and
    is among the first chosen.

    Args:
        weights: Float tensor of rank >= 2.
        sparsity: Float scalar (Python or tensor), the target sparsity.
        m_by_n: Pair of Python ints `(m, n)` with `0 < m < n`.

    Returns:
        A float32 0/1 tensor of `weights`' shape.

    Example:

    >>> w = ops.convert_to_tensor([[1.0], [8.0], [3.0], [2.0]])
    >>> m_by_n_mask(w, 0.5, (2, 4))
    [[0.], [1.], [1.], [0.]]
    """
    shape = tuple(weights.shape)
    if len(shape) < 2:
        raise _m_by_n_rank_error(shape, m_by_n)
    num_zeros, group_size = m_by_n
    outer = math.prod(shape[:-2])
    size_in, size_out = shape[-2:]
    groups_along = -(-size_in // group_size)
    magnitudes = ops.reshape(
        ops.abs(ops.cast(weights, "float32")), (outer, size_in, size_out)
    )
    # Padding scores -1, below every real magnitude, so it never outranks one.
    magnitudes = ops.pad(
        magnitudes,
        ((0, 0), (0, groups_along * group_size - size_in), (0, 0)),
        constant_values=-1.0,
    )
    groups = ops.reshape(
        magnitudes, (outer, groups_along, group_size, size_out)
    )
    kept = ops.less(_rank_in_group(groups), group_size - num_zeros)
    cost = ops.sum(ops.where(kept, 0.0, ops.maximum(groups, 0.0)), axis=2)
    num_groups = outer * groups_along * size_out
    share = ops.minimum(
        ops.cast(sparsity, "float32") * float(group_size) / float(num_zeros),
        1.0,
    )
    num_sparse = ops.clip(
        ops.round(ops.cast(num_groups, "float32") * share),
        0.0,
        float(num_groups),
    )
    # Cheapest first: reversing the bit patterns of the non-negative costs
    # turns "smallest cost" into "largest key", exactly.
    keys = _BITS_HIGH - ops.view(ops.reshape(cost, (-1,)), "int32")
    sparse = _top_k_keys(keys, ops.cast(num_sparse, "int32"))
    sparse = ops.reshape(sparse, (outer, groups_along, 1, size_out))
    mask = ops.logical_or(kept, ops.logical_not(sparse))
    mask = ops.reshape(
        ops.cast(mask, "float32"), (outer, groups_along * group_size, size_out)
    )
    mask = ops.slice(mask, (0, 0, 0), (outer, size_in, size_out))
    return ops.reshape(mask, shape)


def check_pattern_fits(shape, block_size, m_by_n):
    """Raises `ValueError` if a pattern cannot apply to a weight's shape.

    A block must fit the weight's 2-D view (all axes but the last, the last
    axis), and N:M needs a reduction axis (rank >= 2).

    Args:
        shape: Tuple of Python ints, the weight's shape.
        block_size: Pair of ints `(block_rows, block_cols)`.
        m_by_n: `None` or a pair of ints `(m, n)`.
    """
    shape = tuple(shape)
    if m_by_n is not None and len(shape) < 2:
        raise _m_by_n_rank_error(shape, m_by_n)
    rows, cols = _matrix_shape(shape)
    block_rows, block_cols = block_size
    if block_rows > rows or block_cols > cols:
        raise ValueError(
            f"Argument `block_size` must fit the kernel of shape {shape}, "
            f"viewed as a {rows}x{cols} matrix (all axes but the last, the "
            f"last axis): pass at most ({rows}, {cols}), or (1, 1) to prune "
            f"single weights. Received: block_size={tuple(block_size)}"
        )


def _m_by_n_rank_error(shape, m_by_n):
    return ValueError(
        "Argument `sparsity_m_by_n` needs a weight of rank >= 2 with an input "
        "axis, e.g. a Dense kernel (in, out) or a Conv kernel "
        f"(..., in, out), but a weight has shape {shape}; pass "
        f"sparsity_m_by_n=None for this layer. "
        f"Received: sparsity_m_by_n={tuple(m_by_n)}"
    )


def _matrix_shape(shape):
    """`(rows, cols)` of a weight viewed as 2-D: cols is the last axis."""
    if not shape:
        return 1, 1
    return math.prod(shape[:-1]), shape[-1]


def _block_sizes(rows, cols, block_rows, block_cols):
    """Float32 `(num_block_rows, num_block_cols)`: real weights per block."""

    def sizes(length, block):
        return [min(block, length - start) for start in range(0, length, block)]

    row_sizes = ops.convert_to_tensor(sizes(rows, block_rows), "float32")
    col_sizes = ops.convert_to_tensor(sizes(cols, block_cols), "float32")
    return ops.expand_dims(row_sizes, 1) * ops.expand_dims(col_sizes, 0)


def _rank_in_group(groups):
    """Int32 rank of each entry within its group (axis 2): 0 is the largest.

    Counts, by pairwise comparison over the `n` entries of a group, those
    larger, or equal and earlier, so ranks are distinct.
    """
    group_size = groups.shape[2]
    index = ops.reshape(ops.arange(group_size, dtype="int32"), (1, 1, -1, 1))
    rank = ops.zeros(groups.shape, "int32")
    for other in range(group_size):
        value = groups[:, :, other : other + 1, :]
        beats = ops.logical_or(
            ops.greater(value, groups),
            ops.logical_and(
                ops.equal(value, groups), ops.greater(index, other)
            ),
        )
        rank = rank + ops.cast(beats, "int32")
    return rank
