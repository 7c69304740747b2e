"""Mask math: TFMOT's literal cases, exact counts, NumPy references, jit.

Every mask is checked eagerly with a Python sparsity and compiled (`jax.jit`,
`tf.function(jit_compile=True)`) with the sparsity passed as a traced float32
tensor; both must give the same mask bit for bit. On torch the cases run
eagerly, and each mask function is compiled once with `torch.compile` at the
end of this file.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_sparsity import masks


def tensor(values):
    return ops.convert_to_tensor(np.asarray(values, dtype="float32"))


def compiled(fn):
    """`fn(weights, sparsity)` compiled as a backend's train step would be."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    return fn


def masks_eager_and_compiled(fn, weights, sparsities):
    """The masks of `fn` at each sparsity; asserts eager == compiled."""
    weights = tensor(weights)
    fast = compiled(fn)
    results = []
    for target in sparsities:
        eager = ops.convert_to_numpy(fn(weights, target))
        traced = ops.convert_to_numpy(
            fast(weights, ops.convert_to_tensor(target, "float32"))
        )
        assert eager.dtype == np.float32
        assert eager.shape == tuple(weights.shape)
        np.testing.assert_array_equal(eager, traced, err_msg=f"s={target}")
        results.append(eager)
    return results


def mask_of(fn, weights, target):
    (mask,) = masks_eager_and_compiled(fn, weights, [target])
    return mask


def random_weights(shape, seed, kind):
    """Normal values, or small integers so that ties are everywhere."""
    rng = np.random.default_rng(seed)
    if kind == "ties":
        return rng.integers(-3, 4, size=shape).astype("float32")
    return rng.standard_normal(shape).astype("float32")


# NumPy references: stable argsort, so ties go to the lowest flat index.


def reference_keep_count(size, target):
    kept = np.round(np.float32(size) * (np.float32(1.0) - np.float32(target)))
    return int(np.clip(kept, 1, size))


def reference_top_k(scores, k):
    order = np.argsort(-scores.ravel(), kind="stable")
    mask = np.zeros(scores.size, "float32")
    mask[order[:k]] = 1.0
    return mask.reshape(scores.shape)


def reference_magnitude_mask(weights, target):
    return reference_top_k(
        np.abs(weights), reference_keep_count(weights.size, target)
    )


def reference_score_ranks(scores):
    """Float64 values that rank scores as `score_mask` does: excluded
    (negative, NaN) lowest, +inf as the largest finite float32."""
    scores = np.asarray(scores, "float64")
    with np.errstate(invalid="ignore"):
        kept = scores >= 0
    top = float(np.finfo("float32").max)
    return np.where(kept, np.minimum(np.abs(scores), top), -1.0)


def reference_score_mask(scores, target):
    return reference_top_k(
        reference_score_ranks(scores), reference_keep_count(scores.size, target)
    )


def reference_matrix(weights):
    return weights.reshape(math.prod(weights.shape[:-1]), weights.shape[-1])


def reference_pooled(weights, block_size, pooling, scored=False):
    """Per-block pooled `|w|` (or `w` if scored) over real weights only."""
    matrix = reference_matrix(weights if scored else np.abs(weights))
    rows, cols = matrix.shape
    block_rows, block_cols = block_size
    pooled = np.zeros(
        (-(-rows // block_rows), -(-cols // block_cols)), "float32"
    )
    for i in range(pooled.shape[0]):
        for j in range(pooled.shape[1]):
            block = matrix[
                i * block_rows : (i + 1) * block_rows,
                j * block_cols : (j + 1) * block_cols,
            ]
            pooled[i, j] = block.max() if pooling == "MAX" else block.mean()
    return pooled


def reference_expand_blocks(kept, shape, block_size):
    rows, cols = math.prod(shape[:-1]), shape[-1]
    expanded = np.kron(kept, np.ones(block_size, "float32"))
    return expanded[:rows, :cols].reshape(shape)


def reference_block_mask(weights, target, block_size, pooling, scored=False):
    pooled = reference_pooled(weights, block_size, pooling, scored)
    ranks = reference_score_ranks(pooled) if scored else pooled
    kept = reference_top_k(ranks, reference_keep_count(pooled.size, target))
    return reference_expand_blocks(kept, weights.shape, block_size)


def reference_global_masks(
    weights, target, block_size=(1, 1), pooling="AVG", scored=False
):
    """One stable ranking over all units: (score desc, tensor, index)."""
    blocks = tuple(block_size) != (1, 1)
    ranks = []
    for w in weights:
        units = (
            reference_pooled(w, block_size, pooling, scored) if blocks else w
        )
        units = units.ravel()
        ranks.append(reference_score_ranks(units) if scored else np.abs(units))
    tensor_index = np.concatenate(
        [np.full(r.size, t) for t, r in enumerate(ranks)]
    )
    flat_index = np.concatenate([np.arange(r.size) for r in ranks])
    order = np.lexsort((flat_index, tensor_index, -np.concatenate(ranks)))
    kept = np.zeros(order.size, "float32")
    kept[order[: reference_keep_count(order.size, target)]] = 1.0
    results = []
    for w, part in zip(
        weights, np.split(kept, np.cumsum([r.size for r in ranks])[:-1])
    ):
        if blocks:
            grid = reference_pooled(w, block_size, pooling).shape
            results.append(
                reference_expand_blocks(part.reshape(grid), w.shape, block_size)
            )
        else:
            results.append(part.reshape(w.shape))
    return results


def reference_m_by_n_mask(weights, target, m_by_n, scored=False):
    """Per group: its removed positions and cost; then the cheapest groups."""
    num_zeros, group_size = m_by_n
    size_in, size_out = weights.shape[-2:]
    if scored:
        magnitudes = np.where(np.isnan(weights), -np.inf, weights)
    else:
        magnitudes = np.abs(weights)
    magnitudes = magnitudes.reshape(-1, size_in, size_out)
    groups = []
    for outer in range(magnitudes.shape[0]):
        for start in range(0, size_in, group_size):
            for col in range(size_out):
                rows = np.arange(start, min(start + group_size, size_in))
                values = magnitudes[outer, rows, col]
                order = np.argsort(-values, kind="stable")
                removed = rows[order[group_size - num_zeros :]]
                cost = np.float32(
                    np.maximum(magnitudes[outer, removed, col], 0).sum()
                )
                groups.append((cost, outer, removed, col))
    share = min(
        np.float32(1.0),
        np.float32(target) * np.float32(group_size) / np.float32(num_zeros),
    )
    num_sparse = int(np.round(np.float32(len(groups)) * share))
    cheapest = sorted(range(len(groups)), key=lambda i: (groups[i][0], i))
    mask = np.ones_like(magnitudes)
    for index in cheapest[:num_sparse]:
        _, outer, removed, col = groups[index]
        mask[outer, removed, col] = 0.0
    return mask.reshape(weights.shape)


def m_by_n_groups(mask, group_size):
    """`(num_groups, group_size)` view of a mask whose inputs divide evenly."""
    size_in, size_out = mask.shape[-2:]
    grouped = mask.reshape(-1, size_in // group_size, group_size, size_out)
    return np.moveaxis(grouped, 2, -1).reshape(-1, group_size)


# keep_count and magnitude_mask


@pytest.mark.parametrize(
    "size, target, expected",
    [
        (10, 0.2, 8),
        (10, 0.25, 8),  # 7.5 rounds to even
        (10, 0.15, 8),  # 1 - 0.15 is 0.84999996 in float32
        (6, 0.25, 4),  # 4.5 rounds to even
        (2, 0.75, 1),  # 0.5 -> 0, then at least one
        (100, 0.9999, 1),
        (10, 0.0, 10),
        (7, 1.0, 1),
        (7, -0.5, 7),
    ],
)
def test_keep_count_rounds_half_to_even_in_float32(size, target, expected):
    assert int(masks.keep_count(size, target)) == expected
    as_tensor = masks.keep_count(size, ops.convert_to_tensor(target, "float32"))
    assert int(as_tensor) == expected


@pytest.mark.parametrize(
    "weights, target, expected",
    [
        (np.arange(1, 11), 0.2, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]),
        (np.arange(1, 11), 0.25, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]),
        (np.arange(1, 11), 0.15, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]),
        ([1, 2, 3, 4, 5, 6], 0.25, [0, 0, 1, 1, 1, 1]),
        ([3, -4], 0.75, [0, 1]),
        # TFMOT keeps every weight tied with the threshold; exact-k keeps
        # the tied ones with the lowest index.
        ([1, 1, 1, 1, 2, 2], 0.5, [1, 0, 0, 0, 1, 1]),
        ([5, 5, 5, 5], 0.75, [1, 0, 0, 0]),
        ([0, 0, 0, 1], 0.5, [1, 0, 0, 1]),
        ([3, -3, 1, 2], 0.5, [1, 1, 0, 0]),
        ([-5, 1, -2, 4], 0.5, [1, 0, 0, 1]),
        ([-5, 1, -2, 4], 0.0, [1, 1, 1, 1]),
        ([[1, 2], [3, 4]], 0.5, [[0, 0], [1, 1]]),
    ],
)
def test_magnitude_mask_matches_tfmot_cases_with_exact_k(
    weights, target, expected
):
    mask = mask_of(masks.magnitude_mask, weights, target)
    np.testing.assert_array_equal(mask, np.asarray(expected, "float32"))


def test_magnitude_mask_leaves_one_survivor_at_extreme_sparsity():
    weights = np.linspace(1, 100, 100)
    mask = mask_of(masks.magnitude_mask, weights, 0.9999)
    np.testing.assert_array_equal(np.flatnonzero(mask), [99])


def test_magnitude_mask_ranks_a_conv_kernel_as_a_whole():
    weights = (np.arange(18) - 9).reshape(3, 3, 1, 2)
    mask = mask_of(masks.magnitude_mask, weights, 0.5)
    np.testing.assert_array_equal(mask, np.abs(weights) >= 5)


@pytest.mark.parametrize("seed, kind", [(0, "normal"), (1, "ties")])
@pytest.mark.parametrize("shape", [(7,), (4, 6), (2, 2, 3, 4)])
def test_magnitude_mask_is_exact_nested_and_matches_numpy(shape, seed, kind):
    weights = random_weights(shape, seed, kind)
    targets = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
    results = masks_eager_and_compiled(masks.magnitude_mask, weights, targets)
    previous = np.ones(shape, "float32")
    for target, mask in zip(targets, results):
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert mask.sum() == reference_keep_count(weights.size, target)
        assert np.all(mask <= previous), f"not nested at s={target}"
        np.testing.assert_array_equal(
            mask, reference_magnitude_mask(weights, target)
        )
        previous = mask


def test_top_k_mask_breaks_ties_by_lowest_flat_index():
    scores = tensor([[2, 1, 2], [1, 2, 1]])
    mask = ops.convert_to_numpy(masks.top_k_mask(scores, 4))
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 1, 0]])


# top_k_mask against a stable argsort: values whose bit patterns stress the
# radix select (zeros of both signs, denormals, the smallest normal, the
# largest finite value, +inf), ties everywhere, and inputs split into
# several chunks.

EDGE_VALUES = np.asarray(
    [
        0.0,
        -0.0,
        np.finfo("float32").smallest_subnormal,
        3 * np.finfo("float32").smallest_subnormal,
        np.nextafter(np.finfo("float32").tiny, np.float32(0)),
        np.finfo("float32").tiny,
        1.0,
        np.nextafter(np.float32(1), np.float32(2)),
        np.finfo("float32").max,
        np.inf,
    ],
    "float32",
)


def edge_scores(shape, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return np.abs(rng.standard_normal(shape)).astype("float32")
    if kind == "ties":
        return rng.integers(0, 4, size=shape).astype("float32")
    if kind == "equal":
        return np.full(shape, 0.5, "float32")
    if kind == "zeros":
        return np.zeros(shape, "float32")
    if kind == "denormals":
        steps = rng.integers(0, 5, size=shape).astype("float32")
        return steps * np.finfo("float32").smallest_subnormal
    return rng.choice(EDGE_VALUES, size=shape)


def top_k_masks_eager_and_compiled(scores, ks):
    """`top_k_mask` at each k; asserts eager == compiled (k traced)."""
    fast = compiled(masks.top_k_mask)
    results = []
    for k in ks:
        eager = ops.convert_to_numpy(masks.top_k_mask(tensor(scores), k))
        traced = ops.convert_to_numpy(
            fast(tensor(scores), ops.convert_to_tensor(k, "int32"))
        )
        assert eager.dtype == np.float32
        np.testing.assert_array_equal(eager, traced, err_msg=f"k={k}")
        results.append(eager)
    return results


def assert_top_k_masks_match_numpy(scores):
    size = scores.size
    ks = sorted({1, size // 3 + 1, size // 2 + 1, max(size - 1, 1), size})
    for k, mask in zip(ks, top_k_masks_eager_and_compiled(scores, ks)):
        assert mask.sum() == k
        np.testing.assert_array_equal(
            mask, reference_top_k(scores, k), err_msg=f"k={k}"
        )


@pytest.mark.parametrize(
    "kind", ["normal", "ties", "equal", "zeros", "denormals", "edges"]
)
@pytest.mark.parametrize(
    "shape, seed", [((1,), 0), ((7,), 1), ((4, 6), 2), ((2, 3, 5), 3)]
)
def test_top_k_mask_keeps_exactly_k_and_matches_numpy(shape, seed, kind):
    assert_top_k_masks_match_numpy(edge_scores(shape, seed, kind))


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 5 keys and tie buckets of 2 indices, so that small inputs
    take every path: several chunks (but on TensorFlow, which counts all
    keys at once), a last chunk overlapping the one before, several tie
    buckets and a last, partial one. Fresh loop bodies, so that JAX traces
    them anew."""
    monkeypatch.setattr(masks, "_CHUNK", 5)
    monkeypatch.setattr(masks, "_TIE_BITS", 1)
    monkeypatch.setattr(masks, "_COUNTERS", {})


@pytest.mark.parametrize("kind", ["normal", "ties", "equal", "edges"])
@pytest.mark.parametrize("size", [5, 13, 16, 23])
def test_top_k_mask_is_exact_across_chunks_and_tie_buckets(
    small_chunks, size, kind
):
    assert_top_k_masks_match_numpy(edge_scores((size,), size, kind))


@pytest.mark.parametrize("seed", [0, 1])
def test_magnitude_mask_ranks_signed_edge_values_by_magnitude(seed):
    # -0.0, negative denormals and -inf rank by their magnitude.
    values = np.concatenate([EDGE_VALUES, -EDGE_VALUES])
    weights = np.random.default_rng(seed).choice(values, size=(5, 7))
    targets = [0.0, 0.3, 0.5, 0.9]
    results = masks_eager_and_compiled(masks.magnitude_mask, weights, targets)
    for target, mask in zip(targets, results):
        np.testing.assert_array_equal(
            mask, reference_magnitude_mask(weights, target)
        )


@pytest.mark.parametrize(
    "values, k",
    [
        # Each of 50 values about 21,000 times: the k-th largest is tied.
        (np.random.default_rng(0).integers(0, 50, (1 << 20) + 3), 349_526),
        # Only the very last index is dropped: the cut falls in the last,
        # overlapping chunk and the last tie bucket.
        (np.ones((1 << 20) + 3), (1 << 20) + 2),
    ],
)
def test_top_k_mask_is_exact_past_one_chunk(values, k):
    scores = values.astype("float32")
    (mask,) = top_k_masks_eager_and_compiled(scores, [k])
    np.testing.assert_array_equal(mask, reference_top_k(scores, k))


# score_mask: negative (or NaN) scores are excluded.


def test_score_keys_order_scores_and_exclude_negatives():
    values = tensor([-1.0, np.nan, -np.inf, -0.0, 0.0, 1.0, np.inf])
    keys = ops.convert_to_numpy(masks._score_keys(values))
    top = np.asarray(np.finfo("float32").max).view("int32") + 1
    np.testing.assert_array_equal(
        keys, [0, 0, 0, 1, 1, np.float32(1).view("int32") + 1, top]
    )
    assert top == masks._BITS_HIGH


def signed_scores(shape, seed, kind):
    """Scores about half excluded: normal, integer ties, or edge values."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal(shape).astype("float32")
    if kind == "ties":
        return rng.integers(-2, 3, size=shape).astype("float32")
    values = np.concatenate([EDGE_VALUES, -EDGE_VALUES, [np.nan]])
    return rng.choice(values, size=shape).astype("float32")


@pytest.mark.parametrize("kind", ["normal", "ties", "edges"])
@pytest.mark.parametrize("shape, seed", [((7,), 0), ((4, 6), 1)])
def test_score_mask_is_exact_and_matches_numpy(shape, seed, kind):
    scores = signed_scores(shape, seed, kind)
    with np.errstate(invalid="ignore"):
        eligible = scores >= 0
    targets = [0.0, 0.25, 0.5, 0.75, 0.99]
    results = masks_eager_and_compiled(masks.score_mask, scores, targets)
    for target, mask in zip(targets, results):
        k = reference_keep_count(scores.size, target)
        assert mask.sum() == k
        np.testing.assert_array_equal(
            mask, reference_score_mask(scores, target), err_msg=f"s={target}"
        )
        # Excluded scores only once every eligible one is kept.
        kept_excluded = mask[~eligible].sum()
        assert kept_excluded == max(0, k - eligible.sum())


# block_mask


@pytest.mark.parametrize(
    "weights, block_size, pooling, expected",
    [
        (
            [
                [0.1, 0.1, 0.2, 0.2],
                [0.1, 0.1, 0.2, 0.2],
                [0.3, 0.3, 0.4, 0.4],
                [0.3, 0.3, 0.4, 0.4],
            ],
            (2, 2),
            "AVG",
            [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]],
        ),
        (
            [
                [0.1, 0, 0.2, 0],
                [0, -0.1, 0, -0.2],
                [0.3, 0, 0.4, 0],
                [0, -0.3, 0, -0.4],
            ],
            (2, 2),
            "MAX",
            [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]],
        ),
        (
            np.arange(1, 16).reshape(3, 5),
            (2, 2),
            "AVG",
            [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]],
        ),
        (
            np.arange(1, 16).reshape(3, 5),
            (2, 2),
            "MAX",
            [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]],
        ),
        (
            [[1, 2, 10, 1], [5, 5, 0, 3]],
            (1, 2),
            "AVG",
            [[0, 0, 1, 1], [1, 1, 0, 0]],
        ),
        (
            [[1, 9], [2, 0], [7, 1], [1, 1]],
            (2, 1),
            "AVG",
            [[0, 1], [0, 1], [1, 0], [1, 0]],
        ),
    ],
)
def test_block_mask_matches_tfmot_cases(weights, block_size, pooling, expected):
    def fn(w, s):
        return masks.block_mask(w, s, block_size, pooling)

    mask = mask_of(fn, weights, 0.5)
    np.testing.assert_array_equal(mask, np.asarray(expected, "float32"))


def test_block_mask_averages_edge_blocks_over_real_weights_only():
    # Blocks (1, 2): [4, 4] averages 4, the edge block [5] averages 5. Zero
    # padding would average it to 2.5 and keep [4, 4] instead.
    mask = mask_of(
        lambda w, s: masks.block_mask(w, s, (1, 2), "AVG"), [[4, 4, 5]], 0.5
    )
    np.testing.assert_array_equal(mask, [[0, 0, 1]])


def test_block_mask_views_a_conv_kernel_with_rows_along_input_channels():
    # (kh, kw, cin, cout) = (1, 2, 2, 1): rows are (kw, cin) in row-major
    # order, so a (2, 1) block holds both input channels of one tap.
    weights = np.asarray([1, 1, 5, 5], "float32").reshape(1, 2, 2, 1)
    mask = mask_of(
        lambda w, s: masks.block_mask(w, s, (2, 1), "AVG"), weights, 0.5
    )
    np.testing.assert_array_equal(mask.ravel(), [0, 0, 1, 1])


@pytest.mark.parametrize(
    "shape, kind, block_size, pooling",
    [
        ((4, 6), "ties", (2, 2), "AVG"),
        ((4, 6), "ties", (1, 2), "MAX"),
        ((5, 7), "normal", (2, 3), "AVG"),
        ((5, 7), "ties", (3, 1), "MAX"),
        ((2, 3, 4, 5), "ties", (3, 2), "AVG"),
    ],
)
def test_block_mask_keeps_exact_blocks_and_matches_numpy(
    shape, kind, block_size, pooling
):
    weights = random_weights(shape, 0, kind)
    targets = [0.0, 0.3, 0.5, 0.8]

    def fn(w, s):
        return masks.block_mask(w, s, block_size, pooling)

    rows = math.prod(shape[:-1])
    num_blocks = -(-rows // block_size[0]) * -(-shape[-1] // block_size[1])
    results = masks_eager_and_compiled(fn, weights, targets)
    for target, mask in zip(targets, results):
        assert set(np.unique(mask)) <= {0.0, 1.0}
        expected = reference_block_mask(weights, target, block_size, pooling)
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")
        padded = np.pad(
            mask.reshape(rows, shape[-1]),
            ((0, -rows % block_size[0]), (0, -shape[-1] % block_size[1])),
            constant_values=-1,
        )
        blocks = padded.reshape(
            padded.shape[0] // block_size[0],
            block_size[0],
            padded.shape[1] // block_size[1],
            block_size[1],
        )
        kept = blocks.max(axis=(1, 3))
        assert kept.sum() == reference_keep_count(num_blocks, target)


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
@pytest.mark.parametrize(
    "shape, block_size", [((5, 7), (2, 3)), ((4, 6), (1, 2))]
)
def test_block_mask_ranks_scores_as_they_are_when_scored(
    shape, block_size, pooling
):
    # Integer scores, half of them negative: pooled as they are, and blocks
    # whose pooled score is negative rank last.
    scores = signed_scores(shape, 2, "ties")
    targets = [0.0, 0.3, 0.5, 0.8]

    def fn(w, s):
        return masks.block_mask(w, s, block_size, pooling, scored=True)

    results = masks_eager_and_compiled(fn, scores, targets)
    for target, mask in zip(targets, results):
        expected = reference_block_mask(
            scores, target, block_size, pooling, scored=True
        )
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")


def test_block_mask_rejects_an_unknown_pooling_type():
    with pytest.raises(ValueError, match="pooling='MIN'"):
        masks.block_mask(tensor([[1, 2], [3, 4]]), 0.5, (1, 2), "MIN")


# m_by_n_mask


@pytest.mark.parametrize(
    "weights, m_by_n, expected",
    [
        (
            [[0.74, 0.68], [-0.89, -0.45], [-1.68, 1.24], [0.31, -0.6]],
            (2, 4),
            [[0, 1], [1, 0], [1, 1], [0, 0]],
        ),
        (
            [[1], [8], [3], [2], [5], [0], [7], [6]],
            (2, 4),
            [[0], [1], [1], [0], [0], [0], [1], [1]],
        ),
        ([[1], [2], [3], [4], [5]], (2, 4), [[0], [0], [1], [1], [1]]),
        ([[1], [1], [1], [1]], (2, 4), [[1], [1], [0], [0]]),
        (
            [[1.92, -0.21], [-0.19, 0.57], [1.1, -0.42]],
            (2, 4),
            [[1, 0], [0, 1], [1, 1]],
        ),
        (
            [[[[-0.36, -0.77], [-0.43, -0.18], [0.12, 1.36], [0.77, 0.96]]]],
            (2, 4),
            [[[[0, 0], [1, 0], [0, 1], [1, 1]]]],
        ),
        (
            [[[[-0.36, -0.77], [-0.43, -0.18], [0.12, 1.36], [0.77, 0.96]]]],
            (1, 2),
            [[[[0, 1], [1, 0], [0, 1], [1, 0]]]],
        ),
        (
            [[[[-0.37, 1.85], [0.82, 0.07], [1.17, 0.5]]]],
            (2, 4),
            [[[[0, 1], [1, 0], [1, 1]]]],
        ),
    ],
)
def test_m_by_n_mask_matches_tfmot_cases_at_full_sparsity(
    weights, m_by_n, expected
):
    def fn(w, s):
        return masks.m_by_n_mask(w, s, m_by_n)

    for mask in masks_eager_and_compiled(fn, weights, [0.5, 0.9]):
        np.testing.assert_array_equal(mask, np.asarray(expected, "float32"))


def test_m_by_n_mask_is_dense_at_zero_sparsity():
    mask = mask_of(
        lambda w, s: masks.m_by_n_mask(w, s, (2, 4)),
        random_weights((3, 8, 2), 0, "normal"),
        0.0,
    )
    np.testing.assert_array_equal(mask, 1.0)


@pytest.mark.parametrize(
    "weights, expected",
    [
        # Costs 3 and 11 (the two smallest of each group): the second,
        # cheaper group is pruned first.
        ([5, 6, 7, 8, 1, 2, 3, 4], [1, 1, 1, 1, 0, 0, 1, 1]),
        # Equal costs: the lowest group index goes first.
        ([1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1, 1, 1]),
    ],
)
def test_m_by_n_mask_prunes_cheapest_group_first(weights, expected):
    weights = np.asarray(weights, "float32").reshape(8, 1)
    mask = mask_of(lambda w, s: masks.m_by_n_mask(w, s, (2, 4)), weights, 0.25)
    np.testing.assert_array_equal(mask.ravel(), expected)


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize(
    "shape, m_by_n",
    [((8, 6), (2, 4)), ((8, 6), (1, 2)), ((2, 3, 8, 4), (3, 8))],
)
def test_m_by_n_mask_ramps_groups_from_dense_to_m_by_n(shape, m_by_n, kind):
    num_zeros, group_size = m_by_n
    weights = random_weights(shape, 0, kind)
    num_groups = weights.size // group_size
    half_target = num_zeros / group_size / 2
    targets = [0.0, half_target, num_zeros / group_size, 0.95]

    def fn(w, s):
        return masks.m_by_n_mask(w, s, m_by_n)

    results = masks_eager_and_compiled(fn, weights, targets)
    for target, mask in zip(targets, results):
        np.testing.assert_array_equal(
            mask, reference_m_by_n_mask(weights, target, m_by_n)
        )
    dense, half, full, beyond = (m_by_n_groups(m, group_size) for m in results)
    assert np.all(dense == 1.0)
    kept_per_group = half.sum(axis=1)
    assert set(kept_per_group) <= {group_size, group_size - num_zeros}
    num_sparse = int((kept_per_group == group_size - num_zeros).sum())
    assert num_sparse == round(num_groups / 2)
    assert np.all(full.sum(axis=1) == group_size - num_zeros)
    np.testing.assert_array_equal(beyond, full)


@pytest.mark.parametrize(
    "shape, m_by_n",
    [
        ((7, 3), (2, 4)),
        ((7, 3), (3, 4)),
        ((5, 1), (1, 2)),
        ((2, 9, 2), (2, 4)),
        ((1, 3), (2, 4)),
    ],
)
def test_m_by_n_mask_keeps_n_minus_m_per_group_with_partial_groups(
    shape, m_by_n
):
    num_zeros, group_size = m_by_n
    weights = random_weights(shape, 1, "ties")
    mask = mask_of(lambda w, s: masks.m_by_n_mask(w, s, m_by_n), weights, 0.9)
    np.testing.assert_array_equal(
        mask, reference_m_by_n_mask(weights, 0.9, m_by_n)
    )
    size_in = shape[-2]
    columns = mask.reshape(-1, size_in, shape[-1])
    for start in range(0, size_in, group_size):
        real = min(group_size, size_in - start)
        kept = columns[:, start : start + group_size, :].sum(axis=1)
        assert np.all(kept == min(real, group_size - num_zeros))


@pytest.mark.parametrize("shape", [(8, 6), (7, 3), (2, 9, 2)])
def test_m_by_n_mask_ranks_scores_as_they_are_when_scored(shape):
    # Negative and NaN scores rank last in their group and cost nothing.
    scores = signed_scores(shape, 3, "normal")
    scores.ravel()[::5] = np.nan
    targets = [0.0, 0.25, 0.5, 0.9]

    def fn(w, s):
        return masks.m_by_n_mask(w, s, (2, 4), scored=True)

    results = masks_eager_and_compiled(fn, scores, targets)
    for target, mask in zip(targets, results):
        np.testing.assert_array_equal(
            mask,
            reference_m_by_n_mask(scores, target, (2, 4), scored=True),
            err_msg=f"s={target}",
        )


def test_m_by_n_mask_scored_equals_magnitudes_on_magnitudes():
    weights = random_weights((8, 6), 4, "ties")
    targets = [0.25, 0.5]
    magnitudes = masks_eager_and_compiled(
        lambda w, s: masks.m_by_n_mask(w, s, (2, 4)), weights, targets
    )
    scored = masks_eager_and_compiled(
        lambda w, s: masks.m_by_n_mask(w, s, (2, 4), scored=True),
        np.abs(weights),
        targets,
    )
    for target, expected, mask in zip(targets, magnitudes, scored):
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")


def test_m_by_n_mask_rejects_a_rank_one_weight():
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        masks.m_by_n_mask(tensor([1, 2, 3, 4]), 0.5, (2, 4))


# global_masks: one ranking over a list of tensors.


def global_masks_eager_and_compiled(weights, targets, **kwargs):
    """`global_masks` at each sparsity; asserts eager == compiled."""

    def fn(ws, s):
        return masks.global_masks(ws, s, **kwargs)

    weights = [tensor(w) for w in weights]
    fast = compiled(fn)
    results = []
    for target in targets:
        eager = [ops.convert_to_numpy(m) for m in fn(weights, target)]
        traced = fast(weights, ops.convert_to_tensor(target, "float32"))
        for w, e, t in zip(weights, eager, traced):
            assert e.dtype == np.float32
            assert e.shape == tuple(w.shape)
            np.testing.assert_array_equal(
                e, ops.convert_to_numpy(t), err_msg=f"s={target}"
            )
        results.append(eager)
    return results


def assert_global_masks_match_numpy(weights, targets, **kwargs):
    results = global_masks_eager_and_compiled(weights, targets, **kwargs)
    for target, result in zip(targets, results):
        expected = reference_global_masks(weights, target, **kwargs)
        for index, (mask, reference) in enumerate(zip(result, expected)):
            np.testing.assert_array_equal(
                mask, reference, err_msg=f"s={target}, tensor {index}"
            )
    return results


GLOBAL_SHAPES = [(7,), (4, 6), (2, 3, 5)]
GLOBAL_TARGETS = [0.0, 0.25, 0.5, 0.9, 0.99]


def scaled_weights(shapes, scales, seed, kind):
    return [
        (random_weights(shape, seed + i, kind) * scale).astype("float32")
        for i, (shape, scale) in enumerate(zip(shapes, scales))
    ]


@pytest.mark.parametrize(
    "kind, scales",
    [
        ("normal", (1e-3, 1.0, 100.0)),
        # Integers of one scale: ties cut across tensors.
        ("ties", (1.0, 1.0, 1.0)),
        ("ties", (1e-3, 1.0, 100.0)),
    ],
)
def test_global_masks_rank_all_tensors_together(kind, scales):
    weights = scaled_weights(GLOBAL_SHAPES, scales, 0, kind)
    total = sum(w.size for w in weights)
    results = assert_global_masks_match_numpy(weights, GLOBAL_TARGETS)
    previous = [np.ones(w.shape, "float32") for w in weights]
    for target, result in zip(GLOBAL_TARGETS, results):
        assert sum(m.sum() for m in result) == reference_keep_count(
            total, target
        )
        for mask, before in zip(result, previous):
            assert set(np.unique(mask)) <= {0.0, 1.0}
            assert np.all(mask <= before), f"not nested at s={target}"
        previous = result


def test_global_masks_give_ties_to_earlier_tensors_then_lower_indices():
    weights = [np.asarray([1, 2, 1], "float32"), np.asarray([[1, 2], [1, 0]])]
    (result,) = global_masks_eager_and_compiled(weights, [0.5])
    # Keeps 4 of 7: both 2s, then the first two 1s in the global order.
    np.testing.assert_array_equal(result[0], [1, 1, 1])
    np.testing.assert_array_equal(result[1], [[0, 1], [0, 0]])


@pytest.mark.parametrize("kind", ["normal", "ties", "edges"])
def test_global_masks_exclude_negative_scores(kind):
    # Scaled edge values overflow to inf, which ranks as the largest.
    with np.errstate(over="ignore"):
        weights = [
            signed_scores(shape, seed, kind) * np.float32(scale)
            for seed, (shape, scale) in enumerate(
                zip(GLOBAL_SHAPES, (1e-3, 1.0, 100.0))
            )
        ]
    with np.errstate(invalid="ignore"):
        eligible = sum(int((w >= 0).sum()) for w in weights)
    total = sum(w.size for w in weights)
    results = assert_global_masks_match_numpy(
        weights, GLOBAL_TARGETS, scored=True
    )
    for target, result in zip(GLOBAL_TARGETS, results):
        k = reference_keep_count(total, target)
        with np.errstate(invalid="ignore"):
            kept_excluded = sum(
                m[~(w >= 0)].sum() for w, m in zip(weights, result)
            )
        assert kept_excluded == max(0, k - eligible), f"s={target}"


@pytest.mark.parametrize("scored", [False, True])
@pytest.mark.parametrize(
    "block_size, pooling", [((2, 3), "AVG"), ((2, 3), "MAX"), ((3, 1), "AVG")]
)
def test_global_masks_rank_blocks_across_tensors(block_size, pooling, scored):
    shapes = [(4, 6), (5, 7), (2, 3, 4, 5)]
    if scored:
        weights = [
            signed_scores(shape, i, "ties") for i, shape in enumerate(shapes)
        ]
    else:
        weights = scaled_weights(shapes, (1e-3, 1.0, 100.0), 0, "ties")
    targets = [0.0, 0.3, 0.5, 0.8]
    results = assert_global_masks_match_numpy(
        weights, targets, block_size=block_size, pooling=pooling, scored=scored
    )
    grids = [reference_pooled(w, block_size, pooling).shape for w in weights]
    num_blocks = sum(math.prod(grid) for grid in grids)
    for target, result in zip(targets, results):
        kept_blocks = 0
        for w, mask, grid in zip(weights, result, grids):
            matrix = reference_matrix(mask)
            corners = matrix[:: block_size[0], :: block_size[1]]
            assert corners.shape == grid
            expanded = reference_expand_blocks(corners, w.shape, block_size)
            np.testing.assert_array_equal(mask, expanded)
            kept_blocks += int(corners.sum())
        assert kept_blocks == reference_keep_count(num_blocks, target)


@pytest.mark.parametrize(
    "kwargs, single",
    [
        ({}, masks.magnitude_mask),
        ({"scored": True}, masks.score_mask),
        (
            {"block_size": (2, 3), "pooling": "MAX"},
            lambda w, s: masks.block_mask(w, s, (2, 3), "MAX"),
        ),
        (
            {"block_size": (2, 2), "pooling": "AVG", "scored": True},
            lambda w, s: masks.block_mask(w, s, (2, 2), "AVG", scored=True),
        ),
    ],
)
def test_global_masks_of_one_tensor_equal_the_single_tensor_mask(
    kwargs, single
):
    weights = signed_scores((5, 7), 5, "ties")
    targets = [0.0, 0.3, 0.5, 0.9]
    results = global_masks_eager_and_compiled([weights], targets, **kwargs)
    singles = masks_eager_and_compiled(single, weights, targets)
    for target, (result,), expected in zip(targets, results, singles):
        np.testing.assert_array_equal(result, expected, err_msg=f"s={target}")


@pytest.mark.parametrize("kind", ["ties", "equal", "edges"])
def test_global_masks_are_exact_across_chunks_and_tie_buckets(
    small_chunks, kind
):
    weights = [edge_scores((size,), size, kind) for size in (13, 5, 1, 23)]
    assert_global_masks_match_numpy(weights, GLOBAL_TARGETS)


def test_global_masks_are_exact_past_several_chunks(monkeypatch):
    # Chunks of 2**16 keys: each tensor spans several, ties at the
    # threshold fall in all three.
    monkeypatch.setattr(masks, "_CHUNK", 1 << 16)
    monkeypatch.setattr(masks, "_COUNTERS", {})
    rng = np.random.default_rng(0)
    weights = [
        rng.integers(-40, 41, size).astype("float32")
        for size in (100_003, 150_000, 131_073)
    ]
    assert_global_masks_match_numpy(weights, [0.3, 0.77])


def test_global_masks_reject_an_unknown_pooling_type():
    with pytest.raises(ValueError, match="pooling='MIN'"):
        masks.global_masks([tensor([[1, 2]])], 0.5, pooling="MIN")


# check_pattern_fits


@pytest.mark.parametrize(
    "shape, block_size, m_by_n",
    [
        ((4, 6), (4, 6), None),
        ((3, 3, 2, 8), (18, 1), None),
        ((5,), (1, 5), None),
        ((4, 2), (1, 1), (2, 4)),
        ((3, 3, 1, 2), (1, 1), (3, 4)),
    ],
)
def test_check_pattern_fits_accepts_patterns_that_fit(
    shape, block_size, m_by_n
):
    masks.check_pattern_fits(shape, block_size, m_by_n)


@pytest.mark.parametrize(
    "shape, block_size, m_by_n, message",
    [
        ((4, 6), (5, 1), None, r"\(4, 6\).*Received: block_size=\(5, 1\)$"),
        ((4, 6), (1, 7), None, r"at most \(4, 6\)"),
        ((3, 3, 2, 8), (1, 9), None, r"18x8"),
        ((5,), (2, 1), None, r"Received: block_size=\(2, 1\)$"),
        ((8,), (1, 1), (2, 4), r"\(8,\).*Received: sparsity_m_by_n=\(2, 4\)$"),
        ((), (1, 1), (1, 2), r"shape \(\)"),
    ],
)
def test_check_pattern_fits_names_shape_and_argument(
    shape, block_size, m_by_n, message
):
    with pytest.raises(ValueError, match=message):
        masks.check_pattern_fits(shape, block_size, m_by_n)


# torch.compile: every mask function above runs eagerly on torch (a
# torch.compile per case would add minutes); here each one is compiled
# once, the sparsity traced, over shapes and sparsities, as in a train step.

TORCH_COMPILED_CASES = {
    "magnitude": masks.magnitude_mask,
    "score": masks.score_mask,
    "block_avg": lambda w, s: masks.block_mask(w, s, (2, 2), "AVG"),
    "block_max_scored": lambda w, s: masks.block_mask(
        w, s, (1, 3), "MAX", scored=True
    ),
    "m_by_n": lambda w, s: masks.m_by_n_mask(w, s, (2, 4)),
    "global": lambda w, s: masks.global_masks([w, w * 2.0], s)[1],
}


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="torch only: JAX and TensorFlow compile every case above",
)
@pytest.mark.parametrize("name", sorted(TORCH_COMPILED_CASES))
def test_mask_functions_under_torch_compile_equal_eager(name):
    import torch

    fn = TORCH_COMPILED_CASES[name]
    fast = torch.compile(fn, dynamic=True)
    weights = tensor(random_weights((8, 12), 3, "ties"))
    for target in [0.0, 0.3, 0.5, 0.9]:
        eager = ops.convert_to_numpy(fn(weights, target))
        traced = ops.convert_to_numpy(
            fast(weights, ops.convert_to_tensor(target, "float32"))
        )
        np.testing.assert_array_equal(eager, traced, err_msg=f"s={target}")
        if name == "magnitude":
            assert traced.sum() == reference_keep_count(traced.size, target)


def test_top_k_mask_under_torch_compile_equals_eager():
    if keras.backend.backend() != "torch":
        pytest.skip("torch only: JAX and TensorFlow compile every case above")
    import torch

    fast = torch.compile(masks.top_k_mask, dynamic=True)
    scores = np.abs(random_weights((9, 7), 4, "ties"))
    for k in [1, 20, 62, 63]:
        traced = ops.convert_to_numpy(
            fast(tensor(scores), ops.convert_to_tensor(k, "int32"))
        )
        np.testing.assert_array_equal(traced, reference_top_k(scores, k))
