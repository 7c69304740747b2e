"""Allocation (uniform / global / ERK, per-layer overrides) and criteria
(magnitude / saliency / movement), checked against NumPy references."""

import math
import os

import keras
import numpy as np
import pytest
from conftest import sync
from conftest import to_numpy
from conftest import toy_data

import keras_sparsity as sparsity
from keras_sparsity import allocation

L = keras.layers
CONSTANT_90 = sparsity.ConstantSparsity(0.9, begin_step=0, frequency=1)


def mlp(sizes=(10, 32, 16, 5), seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((sizes[0],))
    x = inputs
    for index, width in enumerate(sizes[1:]):
        x = L.Dense(width, name=f"dense_{index}")(x)
    return keras.Model(inputs, x)


def fit(model, optimizer="sgd", steps=1, x=None, y=None, loss=None):
    if x is None:
        x, y = toy_data(
            input_shape=model.input_shape[1:],
            num_samples=8 * steps,
            num_classes=model.output_shape[-1],
        )
    model.compile(
        optimizer,
        loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    sync(model)
    return model


def kernels_and_masks(model):
    found = []
    for wrapper in sparsity.walk.pruning_wrappers(model):
        for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
            found.append((weight.path, to_numpy(weight), to_numpy(mask)))
    return found


def numpy_keep_count(size, sparsity_):
    return allocation.keep_count(size, sparsity_)


def numpy_erk(shapes, budget):
    """Erdős–Rényi-Kernel written out independently: densities by
    bisection on eps (no closed form), then the same rounding rule."""
    sizes = np.array([math.prod(s) for s in shapes], float)
    raw = np.array([sum(s) / math.prod(s) for s in shapes])
    low, high = 0.0, 1e12
    for _ in range(200):
        eps = (low + high) / 2
        if (np.minimum(eps * raw, 1) * sizes).sum() < budget:
            low = eps
        else:
            high = eps
    return np.minimum(low * raw, 1) * sizes


# --- ERK -------------------------------------------------------------------


def test_erk_counts_match_a_numpy_reference_and_sum_exactly():
    shapes = [(784, 300), (300, 100), (100, 10), (3, 3, 1, 12)]
    total = sum(math.prod(s) for s in shapes)
    budget = numpy_keep_count(total, 0.9)
    kept = allocation.erk_kept(shapes, budget)
    assert sum(kept) == budget
    reference = numpy_erk(shapes, budget)
    np.testing.assert_allclose(kept, reference, atol=1.0)
    # Smaller kernels are denser.
    densities = [k / math.prod(s) for k, s in zip(kept, shapes)]
    assert densities[0] < densities[1] < densities[2]


def test_erk_keeps_kernels_dense_that_would_pass_density_one():
    shapes = [(1000, 1000), (4, 3), (2, 2)]
    total = sum(math.prod(s) for s in shapes)
    budget = numpy_keep_count(total, 0.5)
    kept = allocation.erk_kept(shapes, budget)
    assert kept[1:] == [12, 4]
    assert sum(kept) == budget
    np.testing.assert_allclose(kept, numpy_erk(shapes, budget), atol=1.0)


def test_erk_model_masks_reach_the_allocated_counts_exactly():
    model = mlp()
    pruned = sparsity.prune_low_magnitude(model, CONSTANT_90, allocation="erk")
    fit(pruned)
    found = kernels_and_masks(pruned)
    shapes = [w.shape for _, w, _ in found]
    total = sum(w.size for _, w, _ in found)
    budget = numpy_keep_count(total, 0.9)
    expected = allocation.erk_kept(shapes, budget)
    counts = [int(m.sum()) for _, _, m in found]
    assert counts == expected
    assert sum(counts) == budget
    for _, weight, mask in found:
        assert np.count_nonzero(weight[mask == 0]) == 0
    # The output layer (16x5) is far denser than the first (10x32).
    assert counts[2] / 80 > counts[0] / 320


# --- global ----------------------------------------------------------------


def global_reference(kernels, sparsity_):
    """NumPy top-k over every kernel together: |w| descending, ties by
    kernel order then flat index."""
    values = np.concatenate([np.abs(k).ravel() for k in kernels])
    order = np.lexsort((np.arange(values.size), -values))
    keep = np.zeros(values.size, bool)
    keep[order[: numpy_keep_count(values.size, sparsity_)]] = True
    masks, start = [], 0
    for kernel in kernels:
        masks.append(keep[start : start + kernel.size].reshape(kernel.shape))
        start += kernel.size
    return masks


def test_global_ranking_matches_numpy_across_kernels_of_different_scales():
    model = mlp()
    rng = np.random.RandomState(1)
    for scale, layer in zip((1e-3, 1.0, 100.0), model.layers[1:]):
        kernel = rng.standard_normal(layer.kernel.shape).astype("float32")
        # Integers: many ties, across kernels too.
        layer.kernel.assign(np.round(kernel * 3) * scale)
    kernels = [to_numpy(layer.kernel) for layer in model.layers[1:]]
    pruned = sparsity.prune_low_magnitude(
        model, CONSTANT_90, allocation="global"
    )
    fit(pruned, optimizer=keras.optimizers.SGD(0.0))
    found = kernels_and_masks(pruned)
    masks = [m for _, _, m in found]
    total = sum(k.size for k in kernels)
    assert sum(int(m.sum()) for m in masks) == numpy_keep_count(total, 0.9)
    for mask, expected in zip(masks, global_reference(kernels, 0.9)):
        np.testing.assert_array_equal(mask, expected.astype("float32"))
    # The kernel at scale 1e-3 loses everything but the pruner's floor.
    assert masks[0].sum() == 0 or masks[0].sum() < 0.01 * masks[0].size


def test_global_ranking_follows_a_gradual_schedule_to_the_exact_total():
    schedule = sparsity.PolynomialDecay(0.2, 0.75, 0, 3, frequency=1)
    pruned = sparsity.prune_low_magnitude(
        mlp(), schedule, allocation="global"
    )
    fit(pruned, optimizer="adam", steps=5)
    found = kernels_and_masks(pruned)
    total = sum(w.size for _, w, _ in found)
    kept = sum(int(m.sum()) for _, _, m in found)
    assert kept == numpy_keep_count(total, 0.75)
    for _, weight, mask in found:
        assert np.count_nonzero(weight[mask == 0]) == 0


def test_global_ranking_of_blocks_counts_blocks():
    model = mlp(sizes=(8, 16, 8))
    pruned = sparsity.prune_low_magnitude(
        model,
        sparsity.ConstantSparsity(0.5, 0, frequency=1),
        block_size=(2, 2),
        allocation="global",
    )
    fit(pruned, optimizer=keras.optimizers.SGD(0.0))
    found = kernels_and_masks(pruned)
    blocks = sum(w.size // 4 for _, w, _ in found)
    kept = sum(int(m.sum()) // 4 for _, _, m in found)
    assert kept == numpy_keep_count(blocks, 0.5)
    for _, _, mask in found:
        rows, cols = mask.shape
        grid = mask.reshape(rows // 2, 2, cols // 2, 2)
        assert np.all(grid.min(axis=(1, 3)) == grid.max(axis=(1, 3)))


# --- overrides -------------------------------------------------------------


def test_overrides_by_regex_fix_some_kernels_and_leave_others_dense():
    model = mlp(sizes=(10, 32, 16, 8, 5))
    pruned = sparsity.prune_low_magnitude(
        model,
        CONSTANT_90,
        overrides={"dense_1": 0.5, "dense_3": None},
    )
    names = [w.layer.name for w in sparsity.walk.pruning_wrappers(pruned)]
    assert names == ["dense_0", "dense_1", "dense_2"]
    fit(pruned)
    counts = {p: int(m.sum()) for p, _, m in kernels_and_masks(pruned)}
    assert counts == {
        "dense_0/kernel": numpy_keep_count(320, 0.9),
        "dense_1/kernel": 256,
        "dense_2/kernel": numpy_keep_count(128, 0.9),
    }
    unpruned = sparsity.unpruned_layers(pruned)
    assert [layer.name for layer in unpruned] == ["dense_3"]


def test_erk_and_global_make_up_for_the_overridden_kernels():
    model = mlp(sizes=(10, 32, 16, 8, 5))
    total = 320 + 512 + 128 + 40
    for rule in ("erk", "global"):
        pruned = sparsity.prune_low_magnitude(
            model,
            sparsity.ConstantSparsity(0.6, 0, frequency=1),
            allocation=rule,
            overrides={"dense_0": 0.9, "dense_3/kernel": None},
        )
        fit(pruned)
        counts = {p: int(m.sum()) for p, _, m in kernels_and_masks(pruned)}
        assert counts["dense_0/kernel"] == 32
        assert "dense_3/kernel" not in counts
        assert sum(counts.values()) + 40 == numpy_keep_count(total, 0.6), rule


def test_kernels_of_one_layer_get_their_own_targets():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 4))
    x = L.LSTM(8, name="lstm")(inputs)
    model = keras.Model(inputs, L.Dense(5, name="head")(x))
    pruned = sparsity.prune_low_magnitude(
        model,
        sparsity.ConstantSparsity(0.6, 0, frequency=1),
        allocation="erk",
        overrides={"lstm/lstm_cell/recurrent_kernel": 0.95},
    )
    x, y = toy_data(input_shape=(6, 4), num_samples=8)
    fit(pruned, x=x, y=y)
    counts = {p: int(m.sum()) for p, _, m in kernels_and_masks(pruned)}
    recurrent = [p for p in counts if p.endswith("recurrent_kernel")][0]
    assert counts[recurrent] == 13  # round(256 * 0.05)
    total = 4 * 32 + 8 * 32 + 8 * 5
    assert sum(counts.values()) == numpy_keep_count(total, 0.6)


def test_a_schedule_override_gives_a_layer_its_own_schedule():
    later = sparsity.ConstantSparsity(0.5, begin_step=100)
    pruned = sparsity.prune_low_magnitude(
        mlp(), CONSTANT_90, overrides={"dense_2": later}
    )
    schedules = [
        w.pruning_schedule for w in sparsity.walk.pruning_wrappers(pruned)
    ]
    assert schedules == [CONSTANT_90, CONSTANT_90, later]
    fit(pruned)
    counts = [int(m.sum()) for _, _, m in kernels_and_masks(pruned)]
    assert counts[2] == 80  # not pruned before step 100


# --- criteria --------------------------------------------------------------


def linear_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6,))
    return keras.Model(inputs, L.Dense(4, name="linear")(inputs))


def linear_gradient(kernel, bias, x, y):
    """d/dW of Keras' MSE (mean over outputs, then batch) for x @ W + b."""
    error = x @ kernel + bias - y
    return 2.0 * x.T @ error / error.size


def score_reference(criterion, kernel, gradient, steps):
    product = kernel * gradient
    if criterion == "saliency":
        return (1 - 0.9**steps) * np.abs(product)
    return -steps * product


def ranked_top_k(scores, keep):
    order = np.lexsort((np.arange(scores.size), -scores.ravel()))
    mask = np.zeros(scores.size, "float32")
    mask[order[:keep]] = 1
    return mask.reshape(scores.shape)


@pytest.mark.parametrize("criterion", ["saliency", "movement"])
def test_gradient_criteria_match_numpy_on_fixed_batches(criterion):
    model = linear_model()
    rng = np.random.RandomState(0)
    x = rng.standard_normal((8, 6)).astype("float32")
    y = rng.standard_normal((8, 4)).astype("float32")
    kernel, bias = [to_numpy(w) for w in model.layers[1].weights]
    gradient = linear_gradient(kernel, bias, x, y)
    # SGD at rate 0: the weights and so the gradients stay fixed; the masks
    # are computed at step 2 from the scores after 3 updates.
    schedule = sparsity.ConstantSparsity(0.5, begin_step=2, frequency=100)
    pruned = sparsity.prune_low_magnitude(model, schedule, criterion=criterion)
    pruned.compile(keras.optimizers.SGD(0.0), "mse")
    pruned.fit(np.tile(x, (3, 1)), np.tile(y, (3, 1)), batch_size=8,
               shuffle=False, verbose=0)
    sync(pruned)
    optimizer = pruned.optimizer
    state = [v for v in optimizer.variables if "score" in v.name]
    assert len(state) == 1
    expected = score_reference(criterion, kernel, gradient, 3)
    np.testing.assert_allclose(
        to_numpy(state[0]), expected, rtol=2e-4, atol=1e-7
    )
    (_, weight, mask), = kernels_and_masks(pruned)
    np.testing.assert_array_equal(mask, ranked_top_k(expected, 12))
    np.testing.assert_array_equal(weight, kernel * mask)


def test_movement_keeps_growing_weights_that_magnitude_would_drop():
    model = linear_model()
    kernel = np.full((6, 4), 0.01, "float32")
    kernel[0] = 1.0  # large, but the loss pulls them towards zero
    model.layers[1].kernel.assign(kernel)
    model.layers[1].bias.assign(np.zeros(4, "float32"))
    x = np.eye(6, dtype="float32")
    y = np.full((6, 4), 0.5, "float32")
    y[0] = -1.0
    masks = {}
    for criterion in ("magnitude", "movement"):
        pruned = sparsity.prune_low_magnitude(
            model,
            sparsity.ConstantSparsity(0.75, begin_step=0, frequency=100),
            criterion=criterion,
        )
        pruned.compile(keras.optimizers.SGD(0.0), "mse")
        pruned.fit(x, y, batch_size=6, verbose=0)
        sync(pruned)
        masks[criterion] = kernels_and_masks(pruned)[0][2]
    np.testing.assert_array_equal(masks["magnitude"][0], np.ones(4))
    np.testing.assert_array_equal(masks["movement"][0], np.zeros(4))


@pytest.mark.parametrize(
    "options",
    [
        dict(criterion="saliency", allocation="global"),
        dict(criterion="movement", block_size=(2, 2)),
        dict(criterion="saliency", sparsity_m_by_n=(2, 4)),
        dict(criterion="movement", allocation="erk"),
    ],
)
def test_criteria_combine_with_patterns_and_allocations(options):
    pruned = sparsity.prune_low_magnitude(
        mlp(sizes=(8, 16, 8, 4)),
        sparsity.PolynomialDecay(0.2, 0.5, 0, 2, frequency=1),
        **options,
    )
    fit(pruned, optimizer="adam", steps=4)
    found = kernels_and_masks(pruned)
    total = sum(w.size for _, w, _ in found)
    kept = sum(int(m.sum()) for _, _, m in found)
    if "sparsity_m_by_n" in options:
        for _, _, mask in found:
            groups = mask.reshape(-1, 4, mask.shape[-1]).sum(axis=1)
            assert np.all(groups == 2)
    elif "block_size" not in options:
        assert kept == numpy_keep_count(total, 0.5)
    for _, weight, mask in found:
        assert np.count_nonzero(weight[mask == 0]) == 0


class TopRows(sparsity.Criterion):
    """Scores a weight by its row index: keeps the last rows."""

    def score(self, state, weight):
        rows = keras.ops.arange(weight.shape[0], dtype="float32")
        return keras.ops.broadcast_to(rows[:, None], weight.shape)


def test_a_user_criterion_is_used_and_serialised(tmp_path):
    keras.saving.register_keras_serializable("tests")(TopRows)
    pruned = sparsity.prune_low_magnitude(
        linear_model(),
        sparsity.ConstantSparsity(0.5, 0, frequency=1),
        criterion=TopRows(),
    )
    fit(pruned, loss="mse", x=np.ones((8, 6)), y=np.ones((8, 4)))
    (_, _, mask), = kernels_and_masks(pruned)
    np.testing.assert_array_equal(mask[:3], 0)
    np.testing.assert_array_equal(mask[3:], 1)
    path = os.fspath(tmp_path / "m.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    (wrapper,) = sparsity.walk.pruning_wrappers(loaded)
    assert isinstance(wrapper.criterion, TopRows)


# --- save, load, resume ----------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(allocation="erk", overrides={"dense_1": 0.95}),
        dict(allocation="global", criterion="saliency"),
        dict(criterion="movement"),
    ],
)
def test_resumed_training_ends_with_the_masks_of_a_straight_run(
    options, tmp_path
):
    # Masks change after the interruption (steps 8, 10, 12), so the
    # criteria's state must come back too.
    schedule = sparsity.PolynomialDecay(0.3, 0.8, 0, 12, frequency=2)
    x, y = toy_data(num_samples=64)
    base = mlp()
    straight = sparsity.prune_low_magnitude(base, schedule, **options)
    straight.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    straight.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    first = sparsity.prune_low_magnitude(base, schedule, **options)
    first.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    first.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = os.fspath(tmp_path / "half.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    wrappers = sparsity.walk.pruning_wrappers(resumed)
    originals = sparsity.walk.pruning_wrappers(first)
    for loaded, original in zip(wrappers, originals):
        assert loaded.kernel_targets == original.kernel_targets
        assert loaded.criterion == original.criterion
    resumed.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    sync(straight)
    sync(resumed)
    for (_, w1, m1), (_, w2, m2) in zip(
        kernels_and_masks(straight), kernels_and_masks(resumed)
    ):
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_allclose(w1, w2, rtol=1e-5, atol=1e-6)


def test_compiled_train_step_with_global_saliency():
    """XLA on TensorFlow and torch.compile on PyTorch (JAX always jits)."""
    pruned = sparsity.prune_low_magnitude(
        mlp(),
        sparsity.PolynomialDecay(0.2, 0.7, 0, 3, frequency=1),
        allocation="global",
        criterion="saliency",
    )
    pruned.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(True),
        jit_compile=True,
    )
    x, y = toy_data(num_samples=32)
    pruned.fit(x, y, batch_size=8, verbose=0)
    sync(pruned)
    found = kernels_and_masks(pruned)
    total = sum(w.size for _, w, _ in found)
    assert sum(int(m.sum()) for _, _, m in found) == numpy_keep_count(
        total, 0.7
    )


# --- bad input -------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(allocation="erdos"), "allocation='erdos'"),
        (dict(criterion="taylor"), "criterion='taylor'"),
        (dict(overrides={"conv.*": 0.5}), "['conv.*']"),
        (dict(overrides={"dense_1": 1.0}), "'dense_1' to 1.0"),
        (dict(overrides={"dense_1": -0.1}), "'dense_1' to -0.1"),
        (dict(overrides={"(": 0.5}), "not a regex"),
        (dict(overrides=[("dense_1", 0.5)]), "must be a dict"),
        (
            dict(allocation="erk", overrides={"dense_0": None}),
            "cannot reach sparsity 0.9",
        ),
        (
            dict(allocation="global", sparsity_m_by_n=(2, 4)),
            "allocation='global'",
        ),
    ],
)
def test_bad_allocation_arguments_are_clear_errors(options, message):
    model = mlp()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises((ValueError, TypeError)) as error:
        sparsity.prune_low_magnitude(model, CONSTANT_90, **options)
    assert message in str(error.value)
    assert not sparsity.walk.pruning_wrappers(model)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_allocation_applies_to_models_only():
    with pytest.raises(ValueError, match="apply to whole models"):
        sparsity.prune_low_magnitude(L.Dense(3), allocation="erk")


class Classifier(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = L.Dense(16, name="hidden")
        self.out = L.Dense(5, name="out")

    def call(self, x):
        return self.out(self.hidden(x))


def test_a_failed_allocation_in_place_gives_the_model_back_unpruned():
    model = Classifier()
    model(np.zeros((1, 10), "float32"))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="no prunable layer"):
        sparsity.prune_low_magnitude(
            model, CONSTANT_90, overrides={"missing": 0.5}, inplace=True
        )
    assert not sparsity.walk.pruning_wrappers(model)
    assert all(v.constraint is None for v in model.weights)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_summaries_log_each_kernels_own_target():
    schedule = sparsity.PolynomialDecay(0.0, 0.8, 0, 10, frequency=1)
    pruned = sparsity.prune_low_magnitude(
        mlp(), schedule, overrides={"dense_2": 0.4}
    )
    fit(pruned)
    half = float(to_numpy(schedule(keras.ops.convert_to_tensor(5))[1]))
    scalars = sparsity.summaries.pruning_scalars(pruned, step=5)
    own = scalars["prune_low_magnitude_dense_2/kernel/target_sparsity"]
    assert own == pytest.approx(half * 0.4 / 0.8, rel=1e-6)
    assert scalars["prune_low_magnitude_dense_0/target_sparsity"] == (
        pytest.approx(half)
    )
    # Uniform kernels follow the schedule: no tag of their own.
    assert "prune_low_magnitude_dense_0/kernel/target_sparsity" not in scalars
    scalars = sparsity.summaries.pruning_scalars(pruned, step=10)
    own = scalars["prune_low_magnitude_dense_2/kernel/target_sparsity"]
    assert own == pytest.approx(0.4, abs=1e-7)
