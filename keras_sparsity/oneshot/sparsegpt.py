"""SparseGPT: one-shot pruning with weight reconstruction (Frantar &
Alistarh, 2023).

For a linear layer `y = x W^T`, `W` of shape `(d_out, d_in)`, and the
Hessian `H = X^T X` of the layer-wise squared error over the calibration
inputs, SparseGPT prunes the input columns left to right. `H` is damped by
1 % of its mean diagonal and the upper Cholesky factor `U` of `H^-1` is
taken once. Columns are processed in blocks of 128: a block's mask keeps
the weights with the largest `w^2 / U_jj^2` (for N:M, chosen per group of
`n` columns as the loop reaches it, on the already updated weights); each
column's pruning error `(w - q) / U_jj` is spread over the block's later
columns through row `j` of `U` (the OBS update), and the block's errors are
applied to all later columns at once (lazy batch updates).
"""

from keras import ops

from keras_sparsity.oneshot import selection

BLOCK_SIZE = 128
DAMPING = 0.01


def sparsegpt_prune(weight, hessian, sparsity, m_by_n=None):
    """SparseGPT's pruned weight and mask for a `(d_out, d_in)` weight.

    Unstructured, each block of columns keeps its share of the kernel's
    `round(d_out * d_in * (1 - sparsity))` weights (the shares are rounded
    so that the kernel's count is exact); N:M keeps `n - m` of every `n`
    consecutive inputs of each row.

    Args:
        weight: Float `(d_out, d_in)` tensor.
        hessian: Float `(d_in, d_in)` tensor, `X^T X` over the calibration
            inputs of the layer.
        sparsity: Float in [0, 1) (unused with `m_by_n`).
        m_by_n: None or `(m, n)`.

    Returns:
        `(pruned, keep)`: the updated float32 weight, exactly zero where
        the float32 0/1 mask `keep` is 0.

    Example: `pruned, keep = sparsegpt_prune(w, x.T @ x, 0.5)` for inputs
    `x` of shape `(num_rows, d_in)`.
    """
    weight = ops.cast(weight, "float32")
    num_outputs, num_inputs = weight.shape
    factor, live = _inverse_hessian_factor(hessian)
    weight = weight * ops.expand_dims(live, 0)
    block_size = BLOCK_SIZE
    if m_by_n is not None:
        block_size = max(m_by_n[1], BLOCK_SIZE - BLOCK_SIZE % m_by_n[1])
    else:
        total = selection.num_kept(num_outputs * num_inputs, sparsity)
    done, keeps = [], []
    rest = weight
    for start in range(0, num_inputs, block_size):
        end = min(start + block_size, num_inputs)
        width = end - start
        block = rest[:, :width]
        block_factor = factor[start:end, start:end]
        diagonal = ops.diagonal(block_factor)
        keep = None
        if m_by_n is None:
            quota = round(total * end / num_inputs) - round(
                total * start / num_inputs
            )
            scores = ops.reshape(
                ops.square(block / ops.expand_dims(diagonal, 0)),
                (1, num_outputs * width),
            )
            keep = ops.reshape(
                selection.row_top_k(scores, quota), (num_outputs, width)
            )
        block, keep, errors = _prune_block(
            block, block_factor, diagonal, keep, m_by_n
        )
        done.append(block * keep)
        keeps.append(keep)
        rest = rest[:, width:]
        if end < num_inputs:
            rest = rest - ops.matmul(errors, factor[start:end, end:])
    return ops.concatenate(done, axis=1), ops.concatenate(keeps, axis=1)


def _prune_block(block, factor, diagonal, keep, m_by_n):
    """One block, a column at a time: `(block, keep, errors)`, the block's
    updated weights, its mask and its scaled errors `(d_out, width)`."""
    width = block.shape[1]
    group_keeps, errors = [], []
    for column in range(width):
        if m_by_n is not None and column % m_by_n[1] == 0:
            group = slice(column, column + m_by_n[1])
            scores = ops.square(
                block[:, group] / ops.expand_dims(diagonal[group], 0)
            )
            group_keeps.append(selection.group_top_k(scores, m_by_n))
        if m_by_n is not None:
            kept = group_keeps[-1][:, column % m_by_n[1]]
        else:
            kept = keep[:, column]
        values = block[:, column]
        error = values * (1.0 - kept) / diagonal[column]
        # Row `column` of the upper factor is zero left of the diagonal, so
        # this updates the columns from `column` on (and prunes `column`).
        block = block - ops.expand_dims(error, 1) * ops.expand_dims(
            factor[column], 0
        )
        errors.append(error)
    if m_by_n is not None:
        keep = ops.concatenate(group_keeps, axis=1)
    return block, keep, ops.stack(errors, axis=1)


def _inverse_hessian_factor(hessian):
    """The upper Cholesky factor of the damped `H^-1`, and a float32 0/1
    vector of the inputs that were ever non-zero (dead inputs get a unit
    diagonal and their weights are zeroed, as in the reference code)."""
    hessian = ops.cast(hessian, "float32")
    size = hessian.shape[0]
    diagonal = ops.diagonal(hessian)
    live = ops.cast(ops.greater(diagonal, 0.0), "float32")
    eye = ops.eye(size, dtype="float32")
    hessian = hessian + eye * ops.expand_dims(1.0 - live, 0)
    damping = DAMPING * ops.mean(ops.diagonal(hessian))
    hessian = hessian + damping * eye
    inverse = ops.cholesky_inverse(ops.cholesky(hessian))
    inverse = (inverse + ops.transpose(inverse)) / 2.0
    return ops.cholesky(inverse, upper=True), live
