"""OWL: outlier-weighted layer-wise sparsity (Yin et al., 2024).

Blocks whose Wanda scores `|W| * ||X||` hold more outliers are pruned less.
A block's outlier ratio is the share of its scores (all its kernels
together) above `outlier_threshold` times their mean; the ratios are
scaled to `[0, 2 * max_deviation]` and a block's sparsity is the target
minus its scaled ratio plus their mean, so the blocks' sparsities average
to the target. The paper's defaults: threshold M = 5, deviation λ = 0.08.
"""

import numbers

from keras import ops

from keras_sparsity.oneshot.wanda import wanda_scores


class OutlierWeighted:
    """OWL's sparsity allocation, for `oneshot.prune(allocation=...)`.

    Args:
        outlier_threshold: Float > 0, M: a score is an outlier above M
            times the mean score of its block.
        max_deviation: Float >= 0, λ: a block's sparsity lies within
            `target ± max_deviation`.

    Example: `oneshot.prune(model, data, allocation=OutlierWeighted(5, 0.08))`
    """

    def __init__(self, outlier_threshold=5.0, max_deviation=0.08):
        for name, value in (
            ("outlier_threshold", outlier_threshold),
            ("max_deviation", max_deviation),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"Argument `{name}` must be a number. Received: "
                    f"{name}={value!r}"
                )
        if not outlier_threshold > 0 or not 0 <= max_deviation < 0.5:
            raise ValueError(
                "Arguments `outlier_threshold` must be > 0 (the paper's "
                "5) and `max_deviation` in [0, 0.5) (the paper's 0.08). "
                f"Received: outlier_threshold={outlier_threshold!r}, "
                f"max_deviation={max_deviation!r}"
            )
        self.outlier_threshold = float(outlier_threshold)
        self.max_deviation = float(max_deviation)

    def outlier_ratio(self, weights_and_norms):
        """The share of a block's Wanda scores above M times their mean.

        Args:
            weights_and_norms: List of `(weight (d_out, d_in), sum x_j^2)`
                pairs, the block's kernels.
        """
        total = count = 0.0
        size = 0
        scores = [wanda_scores(w, n) for w, n in weights_and_norms]
        for score in scores:
            total += float(ops.convert_to_numpy(ops.sum(score)))
            size += score.shape[0] * score.shape[1]
        bound = self.outlier_threshold * total / size
        for score in scores:
            count += float(
                ops.convert_to_numpy(
                    ops.sum(ops.cast(ops.greater(score, bound), "float32"))
                )
            )
        return count / size

    def sparsities(self, ratios, target):
        """Per-block sparsities from outlier `ratios`, averaging `target`
        (clipped to [0, 0.99], which can move the average only there)."""
        low, high = min(ratios), max(ratios)
        if high == low:
            return [target] * len(ratios)
        scaled = [
            (r - low) / (high - low) * 2 * self.max_deviation for r in ratios
        ]
        mean = sum(scaled) / len(scaled)
        return [min(max(target - s + mean, 0.0), 0.99) for s in scaled]
