"""Extremes (issue #15, item 5): 99.9 % of a large kernel, 1-element and
all-zero kernels, NaN and inf weights, float16 and bfloat16 kernels tied
everywhere. Masks are exact, equal to NumPy references on every backend,
eagerly and compiled, and never keep a NaN while a number is left."""

import keras
import numpy as np
import pytest
from conftest import assert_exact_sparsity
from conftest import compile_model
from conftest import expected_nonzeros
from conftest import pruned_pairs
from conftest import toy_data
from keras import ops
from test_masks import compiled
from test_masks import reference_block_mask
from test_masks import reference_m_by_n_mask
from test_masks import reference_magnitude_mask

import keras_sparsity as sparsity
from keras_sparsity import masks

L = keras.layers


def masks_of(fn, weights, dtype, targets, *, eager=False):
    """`fn(weights, target)` for each target, weights cast to `dtype`,
    compiled as a train step is (the sparsity traced); with `eager`, also
    run eagerly and asserted equal."""
    tensor = ops.convert_to_tensor(weights, dtype=dtype)
    fast = compiled(fn)
    results = []
    for target in targets:
        traced = fast(tensor, ops.convert_to_tensor(target, "float32"))
        results.append(ops.convert_to_numpy(traced))
        if eager:
            np.testing.assert_array_equal(
                ops.convert_to_numpy(fn(tensor, target)),
                results[-1],
                err_msg=f"s={target}",
            )
    return results


def tied(shape, seed):
    """Multiples of 0.5 in [-2, 2]: exact in float16 and bfloat16, ties
    everywhere, a ninth of them zeros."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-4, 5, size=shape) / 2).astype("float32")


TARGETS = [0.0, 0.5, 0.999]


def m_by_n(weights, target):
    return masks.m_by_n_mask(weights, target, (2, 4))


def max_blocks(weights, target):
    return masks.block_mask(weights, target, (2, 3), "MAX")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_masks_with_ties_everywhere_match_numpy(dtype):
    weights = tied((37, 29), seed=0)
    results = masks_of(
        masks.magnitude_mask, weights, dtype, TARGETS, eager=True
    )
    for target, mask in zip(TARGETS, results):
        expected = reference_magnitude_mask(weights, target)
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")
    for target, mask in zip(TARGETS, masks_of(m_by_n, weights, dtype, TARGETS)):
        expected = reference_m_by_n_mask(weights, target, (2, 4))
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")
    results = masks_of(max_blocks, weights, dtype, TARGETS)
    for target, mask in zip(TARGETS, results):
        expected = reference_block_mask(weights, target, (2, 3), "MAX")
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")


def test_999_per_mille_of_a_large_kernel_keeps_exactly_its_largest():
    weights = np.random.default_rng(1).standard_normal((512, 1024))
    weights = weights.astype("float32")
    (mask,) = masks_of(masks.magnitude_mask, weights, "float32", [0.999])
    assert int(mask.sum()) == expected_nonzeros(weights.size, 0.999) == 524
    np.testing.assert_array_equal(
        mask, reference_magnitude_mask(weights, 0.999)
    )


@pytest.mark.parametrize("shape", [(1,), (1, 1), (4, 3)])
def test_one_element_and_all_zero_kernels_keep_the_first_indices(shape):
    zeros = np.zeros(shape, "float32")
    for target, mask in zip(
        TARGETS, masks_of(masks.magnitude_mask, zeros, "float32", TARGETS)
    ):
        k = expected_nonzeros(zeros.size, target)
        expected = (np.arange(zeros.size) < k).astype("float32")
        np.testing.assert_array_equal(mask.ravel(), expected)


def with_nan_and_inf(shape, seed):
    weights = tied(shape, seed)
    flat = weights.reshape(-1)
    positions = np.random.default_rng(seed).permutation(flat.size)
    flat[positions[:7]] = np.nan
    flat[positions[7:9]] = -np.nan
    flat[positions[9:11]] = np.inf
    flat[positions[11]] = -np.inf
    return weights


def reference_full_m_by_n(weights, num_kept, group_size):
    """Every group along axis 0 keeps its `num_kept` largest magnitudes,
    NaN last, ties to the lowest index."""
    mask = np.zeros(weights.shape, "float32")
    for start in range(0, weights.shape[0], group_size):
        for column in range(weights.shape[1]):
            group = weights[start : start + group_size, column]
            ranks = np.where(np.isnan(group), -1.0, np.abs(group))
            kept = np.argsort(-ranks, kind="stable")[:num_kept]
            mask[start + kept, column] = 1.0
    return mask


def test_nan_ranks_below_every_number_and_inf_above():
    dtype = "float32"
    weights = with_nan_and_inf((12, 8), seed=2)
    targets = [0.0, 0.05, 0.5, 0.95]
    results = masks_of(
        masks.magnitude_mask, weights, dtype, targets, eager=True
    )
    for target, mask in zip(targets, results):
        expected = reference_magnitude_mask(weights, target)
        np.testing.assert_array_equal(mask, expected, err_msg=f"s={target}")
    half, all_kept = results[2], results[0]
    assert not half[np.isnan(weights)].any()
    assert half[np.isinf(weights)].all()
    # Only when fewer numbers than the count remain is a NaN kept.
    assert all_kept.all()
    for pooling in ["AVG", "MAX"]:
        blocks = masks_of(
            lambda w, s: masks.block_mask(w, s, (2, 2), pooling),
            weights,
            dtype,
            [0.5],
        )[0]
        expected = reference_block_mask(weights, 0.5, (2, 2), pooling)
        np.testing.assert_array_equal(blocks, expected, err_msg=pooling)
    (groups,) = masks_of(m_by_n, weights, dtype, [0.5])
    np.testing.assert_array_equal(groups, reference_full_m_by_n(weights, 2, 4))


def test_a_model_with_extreme_kernels_prunes_exactly_and_stays_finite():
    inputs = keras.Input((16,))
    large = L.Dense(256, name="large")(inputs)
    zero = L.Dense(8, kernel_initializer="zeros", name="zero")(large)
    one = L.Dense(1, name="one")(L.Dense(1, name="single")(zero))
    model = keras.Model(inputs, L.Dense(5, name="head")(one))
    assert model.get_layer("single").kernel.shape == (8, 1)
    pruned = sparsity.prune_low_magnitude(
        model, sparsity.ConstantSparsity(0.999, 0, frequency=1)
    )
    compile_model(pruned)
    x, y = toy_data((16,), num_samples=16)
    history = pruned.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert_exact_sparsity(pruned, 0.999)
    kept = {
        wrapper.name: int(mask.sum())
        for wrapper, _, mask in pruned_pairs(pruned)
    }
    assert sorted(kept.values()) == [1, 1, 1, 2, 4]
    for _, weight, _ in pruned_pairs(pruned):
        assert np.isfinite(weight).all()
