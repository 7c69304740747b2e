"""Wanda: pruning by weights and activations (Sun et al., 2024).

A weight's score is `|W_ij| * ||X_j||_2`, its magnitude times the norm of
its input feature over the calibration data; the scores are compared
within each output row (one output unit, over its inputs), and each row
keeps the same number of weights. No weight is updated.
"""

from keras import ops

from keras_sparsity.oneshot import selection


def wanda_scores(weight, squared_norms):
    """`|W| * sqrt(sum_x x_j^2)` for a `(d_out, d_in)` weight."""
    norms = ops.sqrt(ops.maximum(ops.cast(squared_norms, "float32"), 0.0))
    return ops.abs(ops.cast(weight, "float32")) * ops.expand_dims(norms, 0)


def wanda_keep(weight, squared_norms, sparsity, m_by_n=None):
    """Wanda's float32 0/1 mask of a `(d_out, d_in)` weight.

    Args:
        weight: Float `(d_out, d_in)` tensor.
        squared_norms: Float `(d_in,)` tensor, `sum_x x_j^2` over the
            calibration inputs of the layer.
        sparsity: Float in [0, 1): each row keeps
            `round(d_in * (1 - sparsity))` weights (unused with `m_by_n`).
        m_by_n: None, or `(m, n)`: `m` zeros in every `n` consecutive
            inputs of a row instead.

    Example: `keep = wanda_keep(w, ops.sum(x * x, axis=0), 0.5)`
    """
    scores = wanda_scores(weight, squared_norms)
    if m_by_n is not None:
        return selection.group_top_k(scores, m_by_n)
    kept = selection.num_kept(scores.shape[1], sparsity)
    return selection.row_top_k(scores, kept)
