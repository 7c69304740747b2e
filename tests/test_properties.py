"""Property tests of every mask function against a NumPy reference.

Hypothesis draws weights (small integers, so ties are everywhere, or any
float32: signed zeros, subnormals, infinities), shapes from a short list
(every new shape compiles anew on JAX and TensorFlow) and sparsities; the
`keras_sparsity` profile in conftest.py fixes the seed and bounds the
examples. Each mask must equal the reference bit for bit and keep exactly
`keep_count` units, and a mask at a higher sparsity must lie inside the
one at a lower sparsity for the same weights.

The references below rank with a stable sort (ties: lowest flat index) and
do their arithmetic in float32 as the library does. Average pooling and
N:M group costs add float32 values, whose sum depends on the order of the
additions: those tests draw small integers, whose sums are exact in any
order.

`masks_golden.json` holds the NumPy masks of fixed weights: every backend
must reproduce it exactly, so the three backends agree with each other
(`python tests/test_properties.py` writes it again).
"""

import functools
import json
import math
import os

import numpy as np
import pytest
from conftest import backend
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import ops

from keras_sparsity import masks

GOLDEN = os.path.join(os.path.dirname(__file__), "masks_golden.json")
FLOAT32_MAX = float(np.finfo(np.float32).max)

# --- NumPy references ---------------------------------------------------


def ref_keep_count(size, sparsity):
    """round(size * (1 - sparsity)) in float32, half to even, in [1, size]."""
    kept = np.round(np.float32(size) * (np.float32(1.0) - np.float32(sparsity)))
    return int(min(max(kept, 1), size))


def ref_top_k(keys, k):
    """Bool flags at the `k` largest of flat float64 `keys`; ties go to the
    lowest index (a stable sort of the negated keys)."""
    keys = np.asarray(keys, np.float64).reshape(-1)
    order = np.argsort(-keys, kind="stable")
    flags = np.zeros(keys.size, bool)
    flags[order[:k]] = True
    return flags


def magnitude_keys(values):
    return np.abs(np.asarray(values, np.float32)).astype(np.float64)


def score_keys(values):
    """Negative scores and NaN rank last (tied), -0.0 as 0.0, +inf as the
    largest finite float32."""
    values = np.asarray(values, np.float32).astype(np.float64) + 0.0
    excluded = np.isnan(values) | (values < 0)
    return np.where(excluded, -1.0, np.minimum(values, FLOAT32_MAX))


def ref_ranked(values, sparsity, keys_of):
    values = np.asarray(values, np.float32)
    k = ref_keep_count(values.size, sparsity)
    return ref_top_k(keys_of(values), k).reshape(values.shape)


def matrix_shape(shape):
    if not shape:
        return 1, 1
    return math.prod(shape[:-1]), shape[-1]


def ref_block_scores(weights, block_size, pooling, scored):
    """Pooled `|w|` (or `w` if scored) per block of the 2-D view; edge
    blocks hold only their real weights."""
    rows, cols = matrix_shape(weights.shape)
    values = np.asarray(weights, np.float32).reshape(rows, cols)
    if not scored:
        values = np.abs(values)
    block_rows, block_cols = block_size
    grid = (-(-rows // block_rows), -(-cols // block_cols))
    pooled = np.zeros(grid, np.float32)
    for i in range(grid[0]):
        for j in range(grid[1]):
            block = values[
                i * block_rows : (i + 1) * block_rows,
                j * block_cols : (j + 1) * block_cols,
            ]
            if pooling == "MAX":
                pooled[i, j] = block.max()
            else:
                pooled[i, j] = np.float32(block.sum(dtype=np.float32)) / (
                    np.float32(block.size)
                )
    return pooled


def expand_blocks(kept, shape, block_size):
    rows, cols = matrix_shape(shape)
    full = np.repeat(np.repeat(kept, block_size[0], 0), block_size[1], 1)
    return full[:rows, :cols].reshape(shape)


def ref_block_mask(weights, sparsity, block_size, pooling, scored=False):
    pooled = ref_block_scores(weights, block_size, pooling, scored)
    keys_of = score_keys if scored else magnitude_keys
    kept = ref_ranked(pooled, sparsity, keys_of)
    return expand_blocks(kept, weights.shape, block_size)


def ref_m_by_n_mask(weights, sparsity, m_by_n, scored=False):
    """Each group of `n` along axis -2 keeps its `n - m` largest (ties:
    lowest index); the cheapest `round(groups * min(1, s * n / m))` groups
    (pruned total, ties: lowest flat group index) are made sparse."""
    num_zeros, n = m_by_n
    shape = weights.shape
    outer = math.prod(shape[:-2])
    size_in, size_out = shape[-2:]
    values = np.asarray(weights, np.float32).reshape(outer, size_in, size_out)
    if scored:
        values = np.where(np.isnan(values), -np.inf, values)
    else:
        values = np.abs(values)
    along = -(-size_in // n)
    kept = np.zeros((outer, along * n, size_out), bool)
    cost = np.zeros((outer, along, size_out), np.float32)
    for o in range(outer):
        for g in range(along):
            for c in range(size_out):
                group = values[o, g * n : (g + 1) * n, c]
                # A partial group ranks as if padded below every value.
                order = np.argsort(-group.astype(np.float64), kind="stable")
                top = order[: n - num_zeros]
                kept[o, g * n + top, c] = True
                pruned = np.delete(group, top)
                cost[o, g, c] = np.maximum(pruned, 0).sum(dtype=np.float32)
    share = min(
        np.float32(sparsity) * np.float32(n) / np.float32(num_zeros),
        np.float32(1.0),
    )
    num_groups = cost.size
    num_sparse = int(
        np.clip(np.round(np.float32(num_groups) * share), 0, num_groups)
    )
    sparse = ref_top_k(-cost.astype(np.float64), num_sparse)
    sparse = sparse.reshape(outer, along, 1, size_out)
    kept = kept.reshape(outer, along, n, size_out) | ~sparse
    kept = kept.reshape(outer, along * n, size_out)[:, :size_in]
    return kept.reshape(shape)


def ref_global_masks(weights, sparsity, block_size=(1, 1), pooling="AVG"):
    blocks = tuple(block_size) != (1, 1)
    units = [
        ref_block_scores(w, block_size, pooling, False) if blocks else w
        for w in weights
    ]
    flat = np.concatenate([magnitude_keys(u).reshape(-1) for u in units])
    flags = ref_top_k(flat, ref_keep_count(flat.size, sparsity))
    results, start = [], 0
    for w, unit in zip(weights, units):
        kept = flags[start : start + unit.size].reshape(unit.shape)
        start += unit.size
        if blocks:
            kept = expand_blocks(kept, w.shape, block_size)
        results.append(kept.reshape(w.shape))
    return results


# --- Strategies -----------------------------------------------------------

# Few shapes and patterns: on JAX each new one compiles (about a second).
# The golden cases use the same shapes and patterns.
SHAPES = [(1,), (7,), (5, 6), (3, 3, 2, 4)]
SMALL_INTS = st.integers(-3, 3).map(float)
ANY_FLOAT = st.floats(width=32, allow_nan=False)
SPARSITY = st.floats(0.0, 0.9921875, width=32)


def arrays(shapes, elements):
    return st.sampled_from(shapes).flatmap(
        lambda shape: hnp.arrays(np.float32, shape, elements=elements)
    )


def values(shapes, exact_sums=False):
    """Float32 arrays: small integers (ties), or any finite float32 but
    where sums must be exact."""
    if exact_sums:
        return arrays(shapes, SMALL_INTS)
    return st.one_of(arrays(shapes, SMALL_INTS), arrays(shapes, ANY_FLOAT))


def weights_of(shape, exact_sums=False):
    return values([shape], exact_sums)


def two_sparsities():
    return st.tuples(SPARSITY, SPARSITY).map(sorted)


def run(fn, *args, **static):
    """`fn(*args, **static)` as NumPy. On JAX under `jax.jit` (as in a
    train step), one compilation per function, shape and `static`
    arguments: eager JAX dispatches the ranking op by op, ~50x slower."""
    if backend() == "jax":
        fn = _jitted(fn, tuple(sorted(static.items())))
        static = {}
    out = fn(*args, **static)
    if isinstance(out, list):
        return [ops.convert_to_numpy(o) for o in out]
    return ops.convert_to_numpy(out)


@functools.cache
def _jitted(fn, static):
    import jax

    return jax.jit(functools.partial(fn, **dict(static)))


def tensor(array):
    return ops.convert_to_tensor(np.asarray(array, np.float32))


def assert_binary(mask):
    assert mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}


def assert_nested(higher, lower):
    """The mask at the higher sparsity lies inside the lower's."""
    assert np.all(higher <= lower), "a weight kept at higher sparsity only"


# --- Properties -------------------------------------------------------------


@given(st.integers(1, 5000), st.floats(0.0, 1.0, width=32))
def test_keep_count_matches_the_float32_reference(size, sparsity):
    kept = ops.convert_to_numpy(masks.keep_count(size, sparsity))
    assert int(kept) == ref_keep_count(size, sparsity)


@given(values(SHAPES), two_sparsities())
def test_magnitude_mask_is_exact_nested_and_matches_numpy(weights, targets):
    found = [run(masks.magnitude_mask, tensor(weights), s) for s in targets]
    for mask, target in zip(found, targets):
        assert_binary(mask)
        assert mask.shape == weights.shape
        assert int(mask.sum()) == ref_keep_count(weights.size, target)
        expected = ref_ranked(weights, target, magnitude_keys)
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")
    assert_nested(found[1], found[0])


SCORES = st.one_of(
    SMALL_INTS,
    ANY_FLOAT,
    st.sampled_from([-0.0, float("inf"), float("-inf"), float("nan")]),
)


@given(arrays(SHAPES, SCORES), two_sparsities())
def test_score_mask_excludes_negatives_nests_and_matches_numpy(scores, targets):
    found = [run(masks.score_mask, tensor(scores), s) for s in targets]
    for mask, target in zip(found, targets):
        assert_binary(mask)
        assert int(mask.sum()) == ref_keep_count(scores.size, target)
        np.testing.assert_array_equal(
            mask, ref_ranked(scores, target, score_keys), err_msg=f"s={target}"
        )
    assert_nested(found[1], found[0])


@given(arrays([(7,), (24,)], SCORES), st.data())
def test_top_k_scores_keeps_exactly_k_and_matches_numpy(scores, data):
    k = data.draw(st.integers(0, scores.size), label="k")
    mask = run(masks.top_k_scores, tensor(scores), k)
    assert_binary(mask)
    assert int(mask.sum()) == k
    np.testing.assert_array_equal(mask, ref_top_k(score_keys(scores), k))


@given(values([(7,), (5, 6)]), st.data())
def test_top_k_mask_keeps_exactly_k_and_matches_numpy(weights, data):
    k = data.draw(st.integers(1, weights.size), label="k")
    mask = run(masks.top_k_mask, tensor(weights), k)
    assert_binary(mask)
    assert int(mask.sum()) == k
    expected = ref_top_k(magnitude_keys(weights), k).reshape(weights.shape)
    np.testing.assert_array_equal(mask, expected)


# (shape, block_size): edge blocks in both directions, a Conv kernel.
BLOCKED = st.sampled_from([((5, 6), (2, 4)), ((3, 3, 2, 4), (2, 3))])


@given(
    st.sampled_from(["AVG", "MAX"]),
    BLOCKED,
    st.data(),
    two_sparsities(),
    st.booleans(),
)
def test_block_mask_keeps_whole_blocks_nests_and_matches_numpy(
    pooling, blocked, data, targets, scored
):
    shape, block_size = blocked
    weights = data.draw(weights_of(shape, exact_sums=pooling == "AVG"))
    if scored:  # scores may be negative: signs are kept, not dropped
        weights = np.where(weights == 0, -1.0, weights).astype(np.float32)
    rows, cols = matrix_shape(shape)
    grid = (-(-rows // block_size[0]), -(-cols // block_size[1]))
    found = []
    for target in targets:
        mask = run(
            masks.block_mask,
            tensor(weights),
            target,
            block_size=block_size,
            pooling=pooling,
            scored=scored,
        )
        assert_binary(mask)
        expected = ref_block_mask(weights, target, block_size, pooling, scored)
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")
        # Constant over each block, with exactly keep_count blocks kept.
        per_block = mask.reshape(rows, cols)[:: block_size[0], :: block_size[1]]
        np.testing.assert_array_equal(
            expand_blocks(per_block, shape, block_size), mask
        )
        assert per_block.shape == grid
        assert int(per_block.sum()) == ref_keep_count(math.prod(grid), target)
        found.append(mask)
    assert_nested(found[1], found[0])


# (shape, m_by_n): partial last groups (5 = 4 + 1, 6 = 8 - 2), a Conv
# kernel, 1:2, and 3:4 (three pruned values per group cost).
PATTERNED = st.sampled_from(
    [((5, 6), (2, 4)), ((6, 4), (3, 4)), ((3, 3, 5, 2), (1, 2))]
)


@given(PATTERNED, st.data(), two_sparsities(), st.booleans())
def test_m_by_n_mask_keeps_n_minus_m_per_group_nests_and_matches_numpy(
    patterned, data, targets, scored
):
    shape, m_by_n = patterned
    weights = data.draw(weights_of(shape, exact_sums=True))
    num_zeros, n = m_by_n
    full = num_zeros / n  # from here on every group is m:n
    targets = sorted([*targets, full])
    found = []
    for target in targets:
        mask = run(
            masks.m_by_n_mask,
            tensor(weights),
            target,
            m_by_n=m_by_n,
            scored=scored,
        )
        assert_binary(mask)
        expected = ref_m_by_n_mask(weights, target, m_by_n, scored)
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")
        found.append(mask)
    assert_nested(found[1], found[0])
    assert_nested(found[2], found[1])
    # At m/n sparsity every group of n along axis -2 keeps n - m, a partial
    # last group of r weights min(r, n - m).
    size_in = weights.shape[-2]
    grouped = np.moveaxis(found[targets.index(full)], -2, 0)
    for start in range(0, size_in, n):
        length = min(n, size_in - start)
        kept = grouped[start : start + length].sum(axis=0)
        np.testing.assert_array_equal(kept, min(length, n - num_zeros))


@given(
    st.sampled_from([[(5, 6)], [(5, 6), (7,), (3, 3, 2, 4)]]).flatmap(
        lambda shapes: st.tuples(*(weights_of(shape) for shape in shapes))
    ),
    two_sparsities(),
)
def test_global_masks_rank_all_tensors_together_and_match_numpy(
    weights, targets
):
    total = sum(w.size for w in weights)
    found = []
    for target in targets:
        result = run(masks.global_masks, [tensor(w) for w in weights], target)
        expected = ref_global_masks(weights, target)
        assert sum(int(m.sum()) for m in result) == ref_keep_count(
            total, target
        )
        for mask, reference, w in zip(result, expected, weights):
            assert_binary(mask)
            assert mask.shape == w.shape
            np.testing.assert_array_equal(mask, reference, f"s={target}")
        found.append(np.concatenate([m.reshape(-1) for m in result]))
    assert_nested(found[1], found[0])
    if len(weights) == 1:
        single = run(masks.magnitude_mask, tensor(weights[0]), targets[0])
        np.testing.assert_array_equal(
            found[0], single.reshape(-1), "one tensor != magnitude_mask"
        )


@given(
    st.tuples(
        weights_of((5, 6), exact_sums=True),
        weights_of((3, 3, 2, 4), exact_sums=True),
    ),
    st.sampled_from(["AVG", "MAX"]),
    SPARSITY,
)
def test_global_block_masks_rank_blocks_across_tensors_and_match_numpy(
    weights, pooling, target
):
    block_size = (2, 3)
    result = run(
        masks.global_masks,
        [tensor(w) for w in weights],
        target,
        block_size=block_size,
        pooling=pooling,
    )
    expected = ref_global_masks(weights, target, block_size, pooling)
    for mask, reference in zip(result, expected):
        np.testing.assert_array_equal(mask, reference, f"s={target}")


# --- Cross-backend golden ---------------------------------------------------


def golden_cases():
    """Fixed weights (integers, so ties; and normal floats) through every
    mask function: `(name, function, weights list, sparsity, options)`."""
    rng = np.random.default_rng(15)
    ties = rng.integers(-3, 4, size=(5, 6)).astype(np.float32)
    floats = rng.standard_normal((5, 6)).astype(np.float32)
    conv = rng.integers(-2, 3, size=(3, 3, 2, 4)).astype(np.float32)
    scores = np.where(rng.random((5, 6)) < 0.2, -1.0, floats)
    flat = rng.standard_normal(7).astype(np.float32)
    blocks = {"ties": (2, 4), "floats": (2, 4), "conv": (2, 3)}
    cases = []
    for s in (0.3, 0.5, 0.8):
        for kind, w in (("ties", ties), ("floats", floats), ("conv", conv)):
            block = {"block_size": blocks[kind]}
            cases += [
                (f"magnitude/{kind}/{s}", "magnitude", [w], s, {}),
                (
                    f"block_max/{kind}/{s}",
                    "block",
                    [w],
                    s,
                    {**block, "pooling": "MAX"},
                ),
            ]
            if kind != "floats":  # averages of integers: exact sums
                cases.append(
                    (
                        f"block_avg/{kind}/{s}",
                        "block",
                        [w],
                        s,
                        {**block, "pooling": "AVG"},
                    )
                )
            if kind != "conv":  # 2:4 costs add two values: exact
                cases.append((f"m_by_n_2_4/{kind}/{s}", "m_by_n", [w], s, {}))
        cases += [
            (f"score/{s}", "score", [scores.astype(np.float32)], s, {}),
            (f"global/{s}", "global", [ties, flat, conv], s, {}),
        ]
    return cases


def library_masks(fn_name, weights, sparsity, options):
    tensors = [tensor(w) for w in weights]
    if fn_name == "magnitude":
        return [run(masks.magnitude_mask, tensors[0], sparsity)]
    if fn_name == "score":
        return [run(masks.score_mask, tensors[0], sparsity)]
    if fn_name == "block":
        return [
            run(masks.block_mask, tensors[0], sparsity, **options, scored=False)
        ]
    if fn_name == "m_by_n":
        return [
            run(
                masks.m_by_n_mask,
                tensors[0],
                sparsity,
                m_by_n=(2, 4),
                scored=False,
            )
        ]
    return run(masks.global_masks, tensors, sparsity)


def reference_masks(fn_name, weights, sparsity, options):
    if fn_name == "magnitude":
        return [ref_ranked(weights[0], sparsity, magnitude_keys)]
    if fn_name == "score":
        return [ref_ranked(weights[0], sparsity, score_keys)]
    if fn_name == "block":
        return [
            ref_block_mask(
                weights[0], sparsity, options["block_size"], options["pooling"]
            )
        ]
    if fn_name == "m_by_n":
        return [ref_m_by_n_mask(weights[0], sparsity, (2, 4))]
    return ref_global_masks(weights, sparsity)


def packed(mask_list):
    """Masks as strings of 0/1, one per tensor, for a readable JSON."""
    return [
        "".join("1" if v else "0" for v in np.asarray(m).reshape(-1))
        for m in mask_list
    ]


def write_golden():
    golden = {
        name: packed(reference_masks(fn_name, weights, s, options))
        for name, fn_name, weights, s, options in golden_cases()
    }
    with open(GOLDEN, "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)
        f.write("\n")


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN) as f:
        return json.load(f)


@pytest.mark.backend_independent
def test_golden_file_is_what_the_numpy_reference_gives(golden):
    cases = golden_cases()
    assert sorted(golden) == sorted(name for name, *_ in cases)
    for name, fn_name, weights, s, options in cases:
        assert golden[name] == packed(
            reference_masks(fn_name, weights, s, options)
        ), name


def test_masks_of_fixed_weights_equal_the_golden_on_this_backend(golden):
    """The same file on every backend: the three backends agree."""
    for name, fn_name, weights, s, options in golden_cases():
        assert (
            packed(library_masks(fn_name, weights, s, options))
            == (golden[name])
        ), name


if __name__ == "__main__":
    write_golden()
