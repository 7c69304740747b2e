"""Dynamic sparse training (SET, RigL, static random masks), checked
against a NumPy reference of every update."""

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
from keras_sparsity import dst

L = keras.layers


# --- a NumPy reference ------------------------------------------------------


def np_hash(x):
    x = np.asarray(x, np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def np_uniform(seed, step, salt, size):
    with np.errstate(over="ignore"):
        base = np_hash(np_hash(np.uint32(seed) + np.uint32(0x9E3779B9))
                       + np.uint32(step))
        base = np_hash(base + np.uint32(salt))
        bits = np_hash(np.arange(size, dtype=np.uint32) + base)
    return (bits >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def np_top(scores, k):
    """0/1 at the k highest scores >= 0 (ties: lowest index)."""
    order = np.lexsort((np.arange(scores.size), -scores))
    mask = np.zeros(scores.size, np.float32)
    mask[order[:k]] = 1
    return mask


def np_fraction(regrowth, step, begin):
    progress = np.clip(
        (np.float32(step) - begin) / np.float32(regrowth.end_step - begin),
        0,
        1,
    )
    return np.float32(regrowth.drop_fraction * 0.5) * (
        np.float32(1) + np.cos(np.float32(math.pi) * progress)
    )


def np_update(regrowth, old, weight, grad, kept, step, salt, begin=0):
    old = old.ravel()
    random = np_uniform(regrowth.seed, step, salt, old.size)
    if old.min() == 1:
        return np_top(random, kept)
    dropped = int(np.floor(np.float32(np_fraction(regrowth, step, begin))
                           * np.float32(kept)))
    dropped = min(dropped, old.size - kept)
    survivors = np_top(
        np.where(old > 0, np.abs(weight.ravel()), -1), kept - dropped
    )
    grow = np.abs(grad.ravel()) if regrowth.grows_by_gradient else random
    grown = np_top(np.where(old > 0, -1, grow), dropped)
    return np.maximum(survivors, grown)


def test_the_random_stream_matches_numpy_bit_for_bit():
    for seed, step, salt in [(0, 0, 0), (7, 5, 12345), (2**31 - 1, 99, 7)]:
        ours = to_numpy(dst.uniform(seed, step, salt, 1000))
        np.testing.assert_array_equal(ours, np_uniform(seed, step, salt, 1000))
        assert 0.4 < ours.mean() < 0.6


def test_cosine_decay_of_the_drop_fraction():
    regrowth = sparsity.RigL(update_frequency=10, drop_fraction=0.3,
                             end_step=110)
    steps = [10, 35, 60, 85, 110, 200]
    ours = [float(to_numpy(regrowth.drop_fraction_at(s, 10))) for s in steps]
    expected = [0.3, 0.3 * (1 + math.cos(math.pi / 4)) / 2, 0.15,
                0.3 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.0, 0.0]
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    assert [regrowth.updates_at(s, 10) for s in (10, 20, 25, 100, 110)] == [
        False, True, False, True, False
    ]


# --- training ---------------------------------------------------------------


def linear(units=6, features=8, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features,))
    return keras.Model(inputs, L.Dense(units, name="linear")(inputs))


class Recorder(keras.callbacks.Callback):
    """Masks, kernels and optimizer slots after every batch."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        sync(self.model)
        (wrapper,) = sparsity.walk.pruning_wrappers(self.model)
        optimizer = self.model.optimizer
        slots = [
            to_numpy(v)
            for v in optimizer.inner_optimizer.variables
            if v.name.startswith("linear_kernel_")
        ]
        self.steps.append(
            dict(
                mask=to_numpy(wrapper.masks[0]),
                kernel=to_numpy(wrapper.pruned_weights[0]),
                slots=slots,
            )
        )


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_every_update_matches_the_numpy_reference(method):
    cls = {"set": sparsity.SET, "rigl": sparsity.RigL}[method]
    regrowth = cls(update_frequency=2, drop_fraction=0.5, end_step=9, seed=4)
    model = linear()
    pruned = sparsity.prune_low_magnitude(
        model, sparsity.ConstantSparsity(0.75, begin_step=0), regrowth=regrowth
    )
    pruned.compile(keras.optimizers.SGD(0.1), "mse")
    rng = np.random.RandomState(0)
    x = rng.standard_normal((80, 8)).astype("float32")
    y = rng.standard_normal((80, 6)).astype("float32")
    recorder = Recorder()
    # Before each step: the weights, to derive that step's gradient.
    kernel, bias = [to_numpy(w) for w in model.layers[1].weights]
    pruned.fit(x, y, batch_size=8, shuffle=False, verbose=0,
               callbacks=[recorder])
    salt = dst.kernel_salt(0, sparsity.walk.pruning_wrappers(pruned)[0], 0)
    kept = allocation.keep_count(48, 0.75)
    old = np.ones(48, np.float32)
    updates = 0
    for step, seen in enumerate(recorder.steps):
        # The step's gradient and SGD update of the weights before it.
        batch_x, batch_y = x[8 * step: 8 * step + 8], y[8 * step: 8 * step + 8]
        error = batch_x @ kernel + bias - batch_y
        grad = 2.0 * batch_x.T @ error / error.size
        bias_grad = 2.0 * error.sum(axis=0) / error.size
        updated = kernel - 0.1 * grad
        due = step == 0 or regrowth.updates_at(step, 0)
        if due:
            new = np_update(regrowth, old, updated * old.reshape(updated.shape),
                            grad, kept, step, salt)
            updates += int(not np.array_equal(new, old))
        else:
            new = old
        np.testing.assert_array_equal(seen["mask"].ravel(), new, err_msg=step)
        assert int(seen["mask"].sum()) == kept
        kernel = updated * (old * new).reshape(updated.shape)
        np.testing.assert_allclose(seen["kernel"], kernel, rtol=1e-5,
                                   atol=1e-6)
        kernel = seen["kernel"]  # carry on from the model's exact values
        bias = bias - 0.1 * bias_grad
        old = new
    assert updates >= 3  # the initial mask and at least two moves


def test_grown_weights_and_their_adam_moments_start_at_zero():
    regrowth = sparsity.RigL(update_frequency=3, drop_fraction=0.5,
                             end_step=20, seed=1)
    pruned = sparsity.prune_low_magnitude(
        linear(), sparsity.ConstantSparsity(0.5, begin_step=0),
        regrowth=regrowth,
    )
    pruned.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.RandomState(1)
    recorder = Recorder()
    pruned.fit(rng.standard_normal((64, 8)), rng.standard_normal((64, 6)),
               batch_size=8, shuffle=False, verbose=0, callbacks=[recorder])
    grown_total = 0
    for before, after in zip(recorder.steps, recorder.steps[1:]):
        grown = (after["mask"] == 1) & (before["mask"] == 0)
        grown_total += int(grown.sum())
        assert np.all(after["kernel"][grown] == 0)
        assert len(after["slots"]) == 2
        for slot in after["slots"]:
            assert np.all(slot[grown] == 0)
        # A weight that survives keeps its moments.
        kept = (after["mask"] == 1) & (before["mask"] == 1)
        assert np.any(after["slots"][1][kept] != 0)
    assert grown_total > 0


def test_static_sparse_keeps_its_random_mask():
    pruned = sparsity.prune_low_magnitude(
        linear(), sparsity.ConstantSparsity(0.5, begin_step=0),
        regrowth=sparsity.StaticSparse(seed=3),
    )
    pruned.compile("adam", "mse")
    recorder = Recorder()
    pruned.fit(np.ones((40, 8)), np.ones((40, 6)), batch_size=8, verbose=0,
               callbacks=[recorder])
    first = recorder.steps[0]["mask"]
    salt = dst.kernel_salt(0, sparsity.walk.pruning_wrappers(pruned)[0], 0)
    np.testing.assert_array_equal(
        first.ravel(), np_top(np_uniform(3, 0, salt, 48), 24))
    for seen in recorder.steps:
        np.testing.assert_array_equal(seen["mask"], first)


def mlp():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    x = L.Dense(32, name="dense_0")(inputs)
    x = L.Dense(16, name="dense_1")(x)
    return keras.Model(inputs, L.Dense(5, name="dense_2")(x))


def masks_of(model):
    return [
        to_numpy(m)
        for w in sparsity.walk.pruning_wrappers(model)
        for m in w.masks
    ]


def train_mlp(regrowth, allocation_="erk", epochs=1, model=None, **options):
    pruned = model or sparsity.prune_low_magnitude(
        mlp(), sparsity.ConstantSparsity(0.8, begin_step=0),
        allocation=allocation_, regrowth=regrowth, **options,
    )
    if model is None:
        pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    x, y = toy_data(num_samples=64)
    pruned.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
    sync(pruned)
    return pruned


def test_erk_counts_stay_exact_and_a_seed_fixes_the_masks():
    rigl = sparsity.RigL(update_frequency=2, drop_fraction=0.3, end_step=14,
                         seed=5)
    first = train_mlp(rigl)
    shapes = [(10, 32), (32, 16), (16, 5)]
    expected = allocation.erk_kept(
        shapes, allocation.keep_count(320 + 512 + 80, 0.8))
    assert [int(m.sum()) for m in masks_of(first)] == expected
    again = train_mlp(rigl)
    for a, b in zip(masks_of(first), masks_of(again)):
        np.testing.assert_array_equal(a, b)
    other = train_mlp(sparsity.RigL(update_frequency=2, drop_fraction=0.3,
                                    end_step=14, seed=6))
    assert any(not np.array_equal(a, b)
               for a, b in zip(masks_of(first), masks_of(other)))


def test_blocks_move_as_blocks():
    pruned = train_mlp(
        sparsity.SET(update_frequency=2, drop_fraction=0.5, end_step=14),
        allocation_="uniform", block_size=(2, 1),
    )
    for mask, rows in zip(masks_of(pruned), (10, 32, 16)):
        pairs = mask.reshape(rows // 2, 2, -1)
        np.testing.assert_array_equal(pairs[:, 0], pairs[:, 1])
        assert int(mask.sum()) // 2 == allocation.keep_count(mask.size // 2,
                                                             0.8)


def test_summaries_count_what_the_last_update_dropped_and_grew():
    pruned = train_mlp(sparsity.SET(update_frequency=2, drop_fraction=0.5,
                                    end_step=7))
    scalars = sparsity.summaries.pruning_scalars(pruned, step=8)
    dropped = scalars["prune_low_magnitude_dense_0/kernel/dropped"]
    grown = scalars["prune_low_magnitude_dense_0/kernel/grown"]
    kept = int(masks_of(pruned)[0].sum())
    fraction = float(to_numpy(pruned.layers[1].regrowth.drop_fraction_at(6, 0)))
    assert dropped == grown == math.floor(np.float32(fraction) * kept)
    assert dropped > 0


def test_resumed_training_ends_with_the_masks_of_a_straight_run(tmp_path):
    rigl = sparsity.RigL(update_frequency=3, drop_fraction=0.4, end_step=14)
    straight = train_mlp(rigl, epochs=2)
    first = train_mlp(rigl, epochs=1)
    path = os.fspath(tmp_path / "half.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    assert resumed.layers[1].regrowth == rigl
    resumed = train_mlp(None, model=resumed)
    for a, b in zip(masks_of(straight), masks_of(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_train_step():
    """XLA on TensorFlow and torch.compile on PyTorch (JAX always jits)."""
    pruned = sparsity.prune_low_magnitude(
        mlp(), sparsity.ConstantSparsity(0.8, begin_step=0), allocation="erk",
        regrowth=sparsity.RigL(update_frequency=2, end_step=8),
    )
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(True),
                   jit_compile=True)
    eager = train_mlp(sparsity.RigL(update_frequency=2, end_step=8))
    compiled = train_mlp(None, model=pruned)
    for a, b in zip(masks_of(eager), masks_of(compiled)):
        assert int(a.sum()) == int(b.sum())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sparsity.RigL(drop_fraction=0.0, end_step=10),
         "drop_fraction=0.0"),
        (lambda: sparsity.RigL(drop_fraction=1.0, end_step=10),
         "drop_fraction=1.0"),
        (lambda: sparsity.SET(update_frequency=0, end_step=10),
         "update_frequency=0"),
        (lambda: sparsity.SET(end_step=None), "end_step=None"),
        (lambda: sparsity.SET(end_step=10, seed=1.5), "seed=1.5"),
    ],
)
def test_bad_regrowth_arguments(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


@pytest.mark.parametrize(
    "schedule, options, message",
    [
        (sparsity.PolynomialDecay(0.1, 0.8, 0, 10), {}, "constant sparsity"),
        (sparsity.ConstantSparsity(0.8, begin_step=20), {},
         "after the schedule's begin_step=20"),
        (sparsity.ConstantSparsity(0.8, 0), {"allocation": "global"},
         "allocation='global'"),
        (sparsity.ConstantSparsity(0.5, 0), {"sparsity_m_by_n": (2, 4)},
         "sparsity_m_by_n"),
        (sparsity.ConstantSparsity(0.5, 0), {"regrowth": "rigl"},
         "regrowth='rigl'"),
    ],
)
def test_bad_combinations_are_errors_before_anything_changes(
    schedule, options, message
):
    model = mlp()
    options.setdefault("regrowth", sparsity.RigL(end_step=10))
    with pytest.raises((ValueError, TypeError)) as error:
        sparsity.prune_low_magnitude(model, schedule, **options)
    assert message in str(error.value)
    assert not sparsity.walk.pruning_wrappers(model)
