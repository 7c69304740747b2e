"""Exact selection on `(d_out, d_in)` score matrices, ties to the lowest index.

`row_top_k` keeps the `k` highest scores of every row (Wanda compares the
weights of one output unit over its inputs); `group_top_k` keeps the
`n - m` highest of every `n` consecutive scores of a row (N:M). Both are
plain `keras.ops` on non-negative, NaN-free scores, and give every backend
the same mask.
"""

from keras import ops

from keras_sparsity.masks import keep_count


def row_top_k(scores, k):
    """A float32 0/1 mask with ones at each row's `k` highest scores.

    The k-th highest value of a row is read from a sort of the values (so
    the sort's own tie order never matters); among entries equal to it,
    the first ones by column index are kept, so each row has exactly `k`.

    Args:
        scores: Float `(rows, cols)` tensor, non-negative.
        k: Python int in `[0, cols]`.
    """
    num_columns = scores.shape[1]
    if k == 0:
        return ops.zeros(scores.shape, "float32")
    scores = ops.cast(scores, "float32")
    threshold = ops.sort(scores, axis=1)[
        :, num_columns - k : num_columns - k + 1
    ]
    above = ops.greater(scores, threshold)
    missing = k - ops.sum(ops.cast(above, "int32"), axis=1, keepdims=True)
    tied = ops.equal(scores, threshold)
    tie_rank = ops.cumsum(ops.cast(tied, "int32"), axis=1)
    keep = ops.logical_or(
        above, ops.logical_and(tied, ops.less_equal(tie_rank, missing))
    )
    return ops.cast(keep, "float32")


def group_top_k(scores, m_by_n):
    """A float32 0/1 mask keeping `n - m` of every `n` consecutive scores.

    Groups run along each row (`cols` must be a multiple of `n`); in each,
    the highest scores are kept, ties going to the lowest index.

    Args:
        scores: Float `(rows, cols)` tensor, non-negative.
        m_by_n: Pair of Python ints `(m, n)`: `m` zeros in every `n`.
    """
    num_zeros, group_size = m_by_n
    rows, cols = scores.shape
    groups = ops.reshape(
        ops.cast(scores, "float32"), (rows, cols // group_size, group_size)
    )
    index = ops.reshape(ops.arange(group_size, dtype="int32"), (1, 1, -1))
    rank = ops.zeros(groups.shape, "int32")
    for other in range(group_size):
        value = groups[:, :, other : other + 1]
        beats = ops.logical_or(
            ops.greater(value, groups),
            ops.logical_and(
                ops.equal(value, groups), ops.greater(index, other)
            ),
        )
        rank = rank + ops.cast(beats, "int32")
    keep = ops.less(rank, group_size - num_zeros)
    return ops.reshape(ops.cast(keep, "float32"), (rows, cols))


def magnitude_keep(weight, sparsity, m_by_n):
    """The magnitude baseline's mask of a `(d_out, d_in)` matrix: the
    largest `|w|` of the whole kernel (`keep_count` of them; ties to the
    lowest row-major index), or of each N:M group."""
    scores = ops.abs(weight)
    if m_by_n is not None:
        return group_top_k(scores, m_by_n)
    size = scores.shape[0] * scores.shape[1]
    flat = ops.reshape(scores, (1, size))
    return ops.reshape(row_top_k(flat, num_kept(size, sparsity)), scores.shape)


def num_kept(size, sparsity):
    """`masks.keep_count` as a Python int: `round(size * (1 - sparsity))`
    in float32, at least 1."""
    return int(ops.convert_to_numpy(keep_count(size, sparsity)))
