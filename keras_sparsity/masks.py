"""Mask math: scores and a target sparsity in, an exact 0/1 mask out.

Pure `keras.ops` functions, traceable under `jit` on every backend. The
sparsity may be a traced scalar, so the number of kept weights is dynamic;
instead of a full sort the k-th largest score is found by a radix select on
the scores' float32 bit patterns (two histograms, of their high and low 15-16
bits), and ties at the threshold are broken by flat index (a third
histogram, only when some ties are dropped), so every backend returns the
same mask bit for bit.

Three patterns share that ranking: single weights (`magnitude_mask`,
or `score_mask` for precomputed scores), blocks of the kernel's 2-D view
(`block_mask`) and gradual N:M groups along the reduction axis
(`m_by_n_mask`). `global_masks` ranks the weights or blocks of many tensors
together, by summing their histograms, never concatenating them.
"""

import functools
import math

import keras
from keras import ops

# Non-negative float32 values order like their int32 bit patterns; +inf is
# 0x7F800000, so every non-NaN score has a key in [0, _BITS_HIGH].
_BITS_HIGH = 0x7F800000
# The bit pattern of -0.0 as int32.
_NEGATIVE_ZERO = -(1 << 31)
# A key is two digits, `high * 2**_LOW_BITS + low`: `high <= 0xFF00`.
_LOW_BITS = 15
_HIGH_BINS = 1 << 16
# Histograms count this many keys at a time (but on TensorFlow), so that
# their temporaries stay small and are reused: on CPU a fresh 64 MB buffer
# costs more in page faults than counting its keys.
_CHUNK = 1 << 20
# Ties at the k-th largest key are ranked in buckets of 2**_TIE_BITS
# indices.
_TIE_BITS = 12
# A value past every histogram's bins: not counted.
_PAST = 0x7FFFFFFF
# A digit is selected among rows of this many digits, then within one row.
_SELECT_ROW = 1 << 8
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
    keep = _top_k_flags(ops.reshape(scores, (-1,)), k, _magnitude_keys)
    return ops.reshape(ops.cast(keep, "float32"), scores.shape)


def _magnitude_keys(values):
    """Int32 keys that order like `abs(values)` (-0.0 is 0.0), NaN below
    every number: a magnitude maps to its float32 bit pattern plus 1, NaN
    to 0, so keys lie in `[0, _BITS_HIGH + 1]` (+inf's)."""
    bits = ops.view(ops.abs(ops.cast(values, "float32")), "int32")
    return ops.where(ops.greater(bits, _BITS_HIGH), 0, bits + 1)


def _score_keys(values):
    """Int32 keys for scores where a negative value (or NaN) is excluded.

    Excluded values map to 0, below every other key; a non-negative value
    (-0.0 is 0.0) maps to its float32 bit pattern plus 1, values above the
    largest finite float32 (+inf) to that of the largest finite float32, so
    keys lie in `[0, _BITS_HIGH]`.
    """
    # On bit patterns: XLA on CPU flushes denormals in float comparisons.
    bits = ops.view(ops.cast(values, "float32"), "int32")
    bits = ops.where(ops.equal(bits, _NEGATIVE_ZERO), 0, bits)
    keys = ops.minimum(bits, _BITS_HIGH - 1) + 1
    scored = ops.logical_and(
        ops.greater_equal(bits, 0), ops.less_equal(bits, _BITS_HIGH)
    )
    return ops.where(scored, keys, 0)


def _same_keys(keys):
    return keys


def _top_k_flags(values, k, to_keys):
    """Boolean flags at the `k` largest keys `to_keys(values)`.

    `values` is flat, `to_keys` maps them elementwise to int32 keys in
    `[0, _BITS_HIGH + 1]`, and `k` lies in `[0, size]`; ties at the k-th largest
    key go to the lowest indices. A radix select: a histogram of the keys'
    high digits gives the high digit of the k-th largest key, a histogram of
    the low digits of the keys that share it gives its low digit. Only if
    fewer keys equal to it are kept than exist does a third histogram, of
    their indices, find the last one kept. Histograms apply `to_keys` to a
    chunk of `values` at a time, so that under XLA no full-size array is
    made but the mask.
    """
    high_counts = _histogram(
        _chunk_counter(_high_digits, to_keys), values, _HIGH_BINS
    )
    high, k, _ = _select_digit(high_counts, ops.cast(k, "int32"))
    base = high * (1 << _LOW_BITS)
    low_counts = _histogram(
        _chunk_counter(_low_digits, to_keys), values, 1 << _LOW_BITS, base
    )
    low, missing, tied = _select_digit(low_counts, k)
    threshold = base + low

    def keep_first_ties():
        return _keep_first_ties(values, to_keys, threshold, missing)

    def keep_all_ties():
        return ops.greater_equal(to_keys(values), threshold)

    return ops.cond(ops.less(missing, tied), keep_first_ties, keep_all_ties)


def _select_digit(counts, k):
    """Where the k-th largest key lies, given its per-digit `counts`.

    Returns the digit `d` of the k-th largest key, its rank `k - count(digit
    > d)` among the keys of digit `d`, and `counts[d]`. Rows of
    `_SELECT_ROW` digits are ranked first, then the digits of one row.
    """
    rows = ops.reshape(counts, (-1, _SELECT_ROW))
    row, k, _ = _select_bin(ops.sum(rows, axis=1), k)
    column, k, count = _select_bin(ops.take(rows, row, axis=0), k)
    return row * _SELECT_ROW + column, k, count


def _select_bin(counts, k):
    """`_select_digit` by a cumulative count over all of `counts`."""
    at_or_above = ops.flip(ops.cumsum(ops.flip(counts)))
    enough = ops.greater_equal(at_or_above, k)
    digit = _count_true(enough) - 1
    above = ops.max(ops.where(enough, 0, at_or_above))
    return digit, k - above, ops.take(counts, digit)


def _keep_first_ties(values, to_keys, threshold, missing):
    """Flags at keys above `threshold` and at the first `missing` equal to
    it: a histogram of the ties per bucket of `2**_TIE_BITS` indices gives
    the bucket of the last tie kept, a cumulative count inside it its
    index."""
    size = values.shape[0]
    per_bucket = ops.cumsum(
        _histogram(
            _chunk_counter(_tie_buckets, to_keys),
            values,
            -(-size // (1 << _TIE_BITS)),
            threshold,
        )
    )
    before = ops.less(per_bucket, missing)
    bucket = _count_true(before)
    rank = missing - ops.max(ops.where(before, per_bucket, 0))
    # The bucket's indices; the last bucket is read from `size - window`.
    first = bucket * (1 << _TIE_BITS)
    window = min(size, 1 << _TIE_BITS)
    index = ops.minimum(first, size - window) + ops.arange(
        window, dtype="int32"
    )
    # A gather, not a slice: XLA in TensorFlow would try to evaluate a
    # slice's data-dependent start at compile time.
    tied = ops.logical_and(
        ops.equal(to_keys(ops.take(values, index)), threshold),
        ops.greater_equal(index, first),
    )
    last = ops.take(
        index, _count_true(ops.less(ops.cumsum(ops.cast(tied, "int32")), rank))
    )
    keys = to_keys(values)
    return ops.logical_or(
        ops.greater(keys, threshold),
        ops.logical_and(
            ops.equal(keys, threshold),
            ops.less_equal(ops.arange(size, dtype="int32"), last),
        ),
    )


def _histogram(count_chunk, values, num_bins, *params):
    """Int32 `(num_bins,)` counts over flat `values`, a chunk at a time.

    `count_chunk(index, state)` (from `_chunk_counter`) adds the counts of
    chunk `index` to `state[0]`; `state` is `(counts, values, *params)`.
    """
    size = values.shape[0]
    state = (ops.zeros((num_bins,), "int32"), values, *params)
    num_chunks = -(-size // _chunk_length(size))
    if num_chunks == 1:
        return count_chunk(0, state)[0]
    return ops.fori_loop(0, num_chunks, count_chunk, state)[0]


def _chunk_counter(bins_of, to_keys):
    """A loop body for `_histogram` that counts `bins_of(keys, start,
    *params)` over the chunk of keys from `start`. One body per pair, so
    that eager JAX reuses its compiled loop."""
    return _COUNTERS.setdefault(
        (bins_of, to_keys), functools.partial(_count_chunk, bins_of, to_keys)
    )


_COUNTERS = {}


def _count_chunk(bins_of, to_keys, index, state):
    """Adds the counts of chunk `index` to `state[0]`."""
    counts, values, *params = state
    size = values.shape[0]
    chunk = _chunk_length(size)
    num_bins = counts.shape[0]
    # The last chunk ends at the last key and skips those counted before.
    first = index * chunk
    start = ops.minimum(first, size - chunk)
    keys = to_keys(ops.slice(values, (start,), (chunk,)))
    bins = bins_of(keys, start, *params)
    if size % chunk:
        counted = ops.less(_positions(start, chunk), first)
        bins = ops.where(counted, _PAST, bins)
    return (counts + _bin_counts(bins, num_bins), values, *params)


def _chunk_length(size):
    """Keys per histogram step: TensorFlow's allocator reuses memory, and
    there a loop costs more than it saves (0.45 s vs 0.30 s at 100M)."""
    if keras.backend.backend() == "tensorflow":
        return size
    return min(size, _CHUNK)


def _positions(start, length):
    return start + ops.arange(length, dtype="int32")


def _high_digits(keys, start):
    return ops.right_shift(keys, _LOW_BITS)


def _low_digits(keys, start, base):
    """The low digits of the keys whose high digits are `base`'s; the
    others come out at `2**_LOW_BITS` or more, past the bins."""
    return ops.bitwise_xor(keys, base)


def _tie_buckets(keys, start, threshold):
    """The index bucket of each key equal to `threshold`, else `_PAST`."""
    bucket = ops.right_shift(_positions(start, keys.shape[0]), _TIE_BITS)
    return ops.where(ops.equal(keys, threshold), bucket, _PAST)


def _bin_counts(values, num_bins):
    """Int32 counts of each value of int32 `values` in `[0, num_bins)`;
    larger values are dropped.

    `ops.bincount` sizes its output from the values, which neither `jax.jit`
    nor XLA in TensorFlow accepts: JAX adds ones with a scatter, TensorFlow
    calls its bincount kernel with a fixed size (its segment sum is ~5x
    slower), and PyTorch, whose segment sum adds in float32, counts into
    one more bin.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return ops.segment_sum(
            ops.ones_like(values), values, num_segments=num_bins
        )
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.raw_ops.DenseBincount(
            input=values,
            size=num_bins,
            weights=tf.zeros((0,), "int32"),
            binary_output=False,
        )
    counts = ops.bincount(ops.minimum(values, num_bins), minlength=num_bins + 1)
    return ops.cast(counts[:num_bins], "int32")


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

    Ties go to the lowest flat index; +-inf ranks above every finite
    weight and NaN below every number, so a NaN is kept only when fewer
    weights than the count hold numbers (a NaN weight stays NaN: masking
    multiplies).

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
    return _ranked_mask(weights, sparsity, _magnitude_keys)


def score_mask(scores, sparsity):
    """Keeps the `round(size * (1 - sparsity))` highest-scoring entries.

    As `magnitude_mask`, but ranks the scores themselves: a negative score
    (or NaN) excludes its entry, which is kept only if fewer entries than
    the count are not excluded; +inf ranks as the largest finite float32.
    Ties go to the lowest flat index.

    Args:
        scores: Float tensor of any shape.
        sparsity: Float scalar in [0, 1) (Python or tensor).

    Returns:
        A float32 0/1 tensor of `scores`' shape with exactly
        `keep_count(size, sparsity)` ones.

    Example:

    >>> score_mask(ops.convert_to_tensor([3.0, -5.0, 1.0, 2.0]), 0.5)
    [1., 0., 0., 1.]
    """
    return _ranked_mask(scores, sparsity, _score_keys)


def top_k_scores(scores, k):
    """A float32 0/1 mask at the `k` highest of flat `scores`, ranked as in
    `score_mask` (negative scores excluded, ties to the lowest index).

    Args:
        scores: Flat float tensor.
        k: Int scalar (Python or tensor) in `[0, size]`.
    """
    keep = _top_k_flags(scores, ops.cast(k, "int32"), _score_keys)
    return ops.cast(keep, "float32")


def _ranked_mask(values, sparsity, to_keys):
    """A mask of `values`' shape at its `keep_count` largest keys."""
    size = math.prod(values.shape)
    keep = _top_k_flags(
        ops.reshape(values, (-1,)), keep_count(size, sparsity), to_keys
    )
    return ops.reshape(ops.cast(keep, "float32"), values.shape)


def block_mask(weights, sparsity, block_size, pooling="AVG", scored=False):
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
        scored: If True, `weights` are scores pooled as they are (no
            `abs`), and blocks rank as in `score_mask`: a block whose
            pooled score is negative (or NaN) is excluded.

    Returns:
        A float32 0/1 tensor of `weights`' shape, constant over each block,
        with exactly `keep_count(num_blocks, sparsity)` blocks of ones.

    Example:

    >>> w = ops.convert_to_tensor([[1.0, 2.0, 10.0, 1.0], [5.0, 5.0, 0.0, 3.0]])
    >>> block_mask(w, 0.5, (1, 2))
    [[0., 0., 1., 1.], [1., 1., 0., 0.]]
    """
    _check_pooling(pooling)
    pooled = _block_scores(weights, block_size, pooling, scored)
    to_keys = _score_keys if scored else _magnitude_keys
    kept = _ranked_mask(pooled, sparsity, to_keys)
    return _expand_blocks(kept, weights.shape, block_size)


def _check_pooling(pooling):
    if pooling not in POOLING_TYPES:
        raise ValueError(
            "Argument `pooling` must be 'AVG' or 'MAX'. "
            f"Received: pooling={pooling!r}"
        )


def _block_scores(weights, block_size, pooling, scored):
    """Float32 `(num_block_rows, num_block_cols)` pooled block scores.

    Pools `|w|`, or `w` itself if `scored`, over the real weights of each
    block of `weights`' 2-D view (see `block_mask`).
    """
    rows, cols = _matrix_shape(tuple(weights.shape))
    block_rows, block_cols = block_size
    num_block_rows = -(-rows // block_rows)
    num_block_cols = -(-cols // block_cols)
    values = ops.cast(weights, "float32")
    if not scored:
        values = ops.abs(values)
    # Padding adds nothing to a sum and never wins a max.
    values = ops.pad(
        ops.reshape(values, (rows, cols)),
        (
            (0, num_block_rows * block_rows - rows),
            (0, num_block_cols * block_cols - cols),
        ),
        constant_values=float("-inf") if pooling == "MAX" else 0.0,
    )
    blocks = ops.reshape(
        values, (num_block_rows, block_rows, num_block_cols, block_cols)
    )
    if pooling == "MAX":
        # A block holding NaN pools to NaN on every backend (XLA's max in
        # TensorFlow skips NaN).
        has_nan = ops.any(ops.isnan(blocks), axis=(1, 3))
        return ops.where(has_nan, float("nan"), ops.max(blocks, axis=(1, 3)))
    return ops.sum(blocks, axis=(1, 3)) / _block_sizes(
        rows, cols, block_rows, block_cols
    )


def _expand_blocks(kept, shape, block_size):
    """A per-block float32 mask `kept` spread over a weight of `shape`."""
    shape = tuple(shape)
    rows, cols = _matrix_shape(shape)
    block_rows, block_cols = block_size
    kept = ops.repeat(ops.repeat(kept, block_rows, axis=0), block_cols, axis=1)
    return ops.reshape(ops.slice(kept, (0, 0), (rows, cols)), shape)


def m_by_n_mask(weights, sparsity, m_by_n, scored=False):
    """Zeros `m` of every `n` consecutive weights along the input axis.

    The kernel is viewed as `(outer, in, out)`: `in` is the second-to-last
    axis (the reduction axis of a Dense kernel `(in, out)` or a Conv kernel
    `(..., in, out)`), and a group is `n` consecutive weights along it for
    one position of the other axes. A full group keeps its `n - m`
    largest-magnitude weights (ties: the lowest index; NaN ranks last and
    costs 0); a last, partial group of `r` weights keeps `min(r, n - m)`
    of them, as in TFMOT.

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
        scored: If True, `weights` are scores ranked as they are (no
            `abs`): a negative score (or NaN) is excluded and ranks last in
            its group, and a group costs the sum of its pruned entries'
            `max(score, 0)`.

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
    values = ops.cast(weights, "float32")
    if scored:
        # NaN is excluded: below every score, as the padding.
        values = ops.where(ops.isnan(values), float("-inf"), values)
        padding = float("-inf")
    else:
        # NaN ranks below every magnitude, above the padding.
        values = ops.where(ops.isnan(values), -0.5, ops.abs(values))
        padding = -1.0
    values = ops.reshape(values, (outer, size_in, size_out))
    # Padding scores below every real magnitude (or ties with -inf at a
    # later index), so it never outranks one.
    values = ops.pad(
        values,
        ((0, 0), (0, groups_along * group_size - size_in), (0, 0)),
        constant_values=padding,
    )
    groups = ops.reshape(values, (outer, groups_along, group_size, size_out))
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
    sparse = _top_k_flags(keys, num_sparse, _same_keys)
    sparse = ops.reshape(sparse, (outer, groups_along, 1, size_out))
    mask = ops.logical_or(kept, ops.logical_not(sparse))
    mask = ops.reshape(
        ops.cast(mask, "float32"), (outer, groups_along * group_size, size_out)
    )
    mask = ops.slice(mask, (0, 0, 0), (outer, size_in, size_out))
    return ops.reshape(mask, shape)


def global_masks(
    weights, sparsity, *, block_size=(1, 1), pooling="AVG", scored=False
):
    """Masks for many tensors ranked together: one threshold for all.

    The units of every tensor, single weights or, for a `block_size` other
    than `(1, 1)`, the blocks of each tensor's 2-D view scored as in
    `block_mask`, compete in one ranking by `|w|` (by the scores themselves
    if `scored`, as in `score_mask`), and exactly `keep_count(num_units,
    sparsity)` of them are kept in all. Ties go first to earlier tensors in
    the list, then to the lowest flat index. A one-tensor list gives
    `magnitude_mask`'s, `score_mask`'s or `block_mask`'s mask.

    The tensors are never concatenated, nor their keys: their histograms
    are summed, so a model of 100M+ weights needs no copy of them.

    Args:
        weights: Python list of float tensors of any shapes.
        sparsity: Float scalar in [0, 1) (Python or tensor), the fraction
            of units to zero.
        block_size: Pair of Python ints `(block_rows, block_cols)`.
        pooling: `"AVG"` or `"MAX"`, as in `block_mask`.
        scored: If True, `weights` are scores (negative or NaN: excluded).

    Returns:
        A list of float32 0/1 tensors shaped like `weights`.

    Example:

    >>> w = [ops.convert_to_tensor([0.5, 3.0]), ops.convert_to_tensor([-2.0])]
    >>> global_masks(w, 0.5)
    [[0., 1.], [1.]]
    """
    _check_pooling(pooling)
    blocks = tuple(block_size) != (1, 1)
    to_keys = _score_keys if scored else _magnitude_keys
    units = []
    for tensor in weights:
        if blocks:
            tensor = _block_scores(tensor, block_size, pooling, scored)
        units.append(ops.reshape(tensor, (-1,)))
    num_units = sum(unit.shape[0] for unit in units)
    ranked = [unit for unit in units if unit.shape[0]]
    flags = iter(
        _global_top_k_flags(ranked, keep_count(num_units, sparsity), to_keys)
        if ranked
        else ()
    )
    results = []
    for tensor, unit in zip(weights, units):
        shape = tuple(tensor.shape)
        if not unit.shape[0]:
            results.append(ops.zeros(shape, "float32"))
            continue
        kept = ops.cast(next(flags), "float32")
        if blocks:
            rows, cols = _matrix_shape(shape)
            grid = (-(-rows // block_size[0]), -(-cols // block_size[1]))
            kept = _expand_blocks(ops.reshape(kept, grid), shape, block_size)
        results.append(ops.reshape(kept, shape))
    return results


def _global_top_k_flags(values, k, to_keys):
    """`_top_k_flags` over a list of flat, non-empty tensors as if they were
    concatenated: per-tensor flags at the `k` largest keys in all.

    The digit histograms are summed over the tensors; each tensor's low
    histogram also counts its ties at the threshold, so a running count of
    them gives each tensor its share of the ties kept: all, none, or, in at
    most one tensor, its first few.
    """
    counter = _chunk_counter(_high_digits, to_keys)
    high_counts = _sum(_histogram(counter, v, _HIGH_BINS) for v in values)
    high, k, _ = _select_digit(high_counts, ops.cast(k, "int32"))
    base = high * (1 << _LOW_BITS)
    counter = _chunk_counter(_low_digits, to_keys)
    low_counts = [_histogram(counter, v, 1 << _LOW_BITS, base) for v in values]
    low, missing, _ = _select_digit(_sum(low_counts), k)
    threshold = base + low
    flags = []
    before = 0
    for tensor, counts in zip(values, low_counts):
        tied = ops.take(counts, low)
        kept = ops.clip(missing - before, 0, tied)
        before = before + tied
        flags.append(_keep_ties(tensor, to_keys, threshold, kept, tied))
    return flags


def _sum(tensors):
    return functools.reduce(ops.add, tensors)


def _keep_ties(values, to_keys, threshold, kept, tied):
    """Flags at keys above `threshold` and at the first `kept` of the
    `tied` keys equal to it."""

    def keep_first_ties():
        return _keep_first_ties(values, to_keys, threshold, kept)

    def keep_all_or_none():
        # All ties are above `threshold - 1`; none above `threshold`.
        bound = threshold - ops.cast(ops.greater(kept, 0), "int32")
        return ops.greater(to_keys(values), bound)

    some = ops.logical_and(ops.greater(kept, 0), ops.less(kept, tied))
    return ops.cond(some, keep_first_ties, keep_all_or_none)


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
