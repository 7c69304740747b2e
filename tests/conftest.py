"""Shared fixtures and assertions; `make test` runs the suite per backend."""

import gc
import os

# Import torch before TensorFlow, as Keras' own conftest does (the other
# order can segfault when both are loaded).
if os.environ.get("KERAS_BACKEND") == "torch":
    import torch  # noqa: F401

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import settings
from keras import ops

import keras_sparsity as sparsity

# Property tests: a fixed seed, a bounded number of examples, no timing
# (the first example on a new shape compiles); no database of failures
# carried between runs. HYPOTHESIS_PROFILE=thorough draws more.
settings.register_profile(
    "keras_sparsity",
    derandomize=True,
    max_examples=25,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", settings.get_profile("keras_sparsity"), max_examples=500
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "keras_sparsity"))

# Tests marked `backend_independent` run under this backend only.
INDEPENDENT_BACKEND = "jax"
# Set in CI: a `requires_data` test whose files are missing fails.
REQUIRE_DATA = os.environ.get("KERAS_SPARSITY_REQUIRE_DATA") == "1"
DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def pytest_collection_modifyitems(config, items):
    """Skips `backend_independent` tests but under one backend, with a
    reason that `-rs` prints."""
    if keras.backend.backend() == INDEPENDENT_BACKEND:
        return
    skip = pytest.mark.skip(
        reason="backend-independent: runs once, under "
        f"KERAS_BACKEND={INDEPENDENT_BACKEND}"
    )
    for item in items:
        if item.get_closest_marker("backend_independent"):
            item.add_marker(skip)


def pytest_runtest_setup(item):
    """A `requires_data("mnist", ...)` test whose files are missing from
    ../shared/data is skipped with a reason, or fails in CI."""
    marker = item.get_closest_marker("requires_data")
    if marker is None:
        return
    missing = [
        path
        for path in marker.args
        if not os.path.exists(os.path.join(DATA, path))
    ]
    if not missing:
        return
    message = f"needs {missing} in {os.path.abspath(DATA)}"
    if REQUIRE_DATA:
        pytest.fail(f"KERAS_SPARSITY_REQUIRE_DATA=1: {message}")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """On JAX, drops the compiled programs after each test module. Each one
    keeps memory mappings of its machine code; the whole suite in one
    process would pass the kernel's limit of 65,530 mappings (test_masks
    alone leaves 25,000), and XLA aborts the process while compiling."""
    yield
    if keras.backend.backend() == "jax":
        import jax

        jax.clear_caches()
        gc.collect()


def backend():
    return keras.backend.backend()


def to_numpy(x):
    return ops.convert_to_numpy(x)


class Subclassed(keras.Model):
    """A model written the common subclassed way: one Dense, no graph."""

    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units)

    def call(self, x):
        return self.dense(x)


def built_subclassed(units=3, input_dim=4, name=None):
    """A `Subclassed` model built by a call on one sample."""
    model = Subclassed(units, name=name)
    model(np.zeros((1, input_dim), "float32"))
    return model


def build_simple_dense_model():
    """TFMOT's test model: Dense(8, relu) on 10 features, then Dense(5)."""
    return keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(5),
        ]
    )


def toy_data(input_shape=(10,), num_samples=32, num_classes=5, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.rand(num_samples, *input_shape).astype("float32")
    y = rng.randint(0, num_classes, num_samples)
    return x, y


def compile_model(model, optimizer="adam", **kwargs):
    """Compiles with a pruning optimizer: models assembled from pruned
    layers need one (those from `prune_low_magnitude` wrap any)."""
    model.compile(
        optimizer=sparsity.engine.as_sparsity_optimizer(optimizer),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model


def sync(model):
    """Writes JAX's in-flight training state back into the variables."""
    if backend() == "jax" and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def pruned_pairs(model):
    """(wrapper, weight array, mask array) for every pruned weight."""
    pairs = []
    for wrapper in sparsity.walk.pruning_wrappers(model):
        for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
            pairs.append((wrapper, to_numpy(weight), to_numpy(mask)))
    return pairs


def expected_nonzeros(size, target):
    """The library's rule: round(size * (1 - s)) in float32, at least 1."""
    kept = np.round(np.float32(size) * (np.float32(1.0) - np.float32(target)))
    return int(max(kept, 1))


def assert_exact_sparsity(model, target):
    """Every pruned weight keeps exactly its k weights, all others are 0."""
    pairs = pruned_pairs(model)
    assert pairs, "model has no pruned weights"
    for wrapper, weight, mask in pairs:
        assert set(np.unique(mask)) <= {0.0, 1.0}, wrapper.name
        assert int(mask.sum()) == expected_nonzeros(weight.size, target), (
            wrapper.name,
            weight.shape,
        )
        np.testing.assert_array_equal(weight[mask == 0], 0.0)


def assert_weights_follow_masks(model):
    """Pruned positions are exactly zero in the variables right now."""
    for wrapper, weight, mask in pruned_pairs(model):
        assert np.all(weight[mask == 0] == 0.0), wrapper.name


class Bilinear(keras.layers.Layer):
    """A custom layer with a kernel and no `get_prunable_weights`."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 4))

    def call(self, x):
        return ops.matmul(x, self.w)


class CheckEveryBatch(keras.callbacks.Callback):
    """Asserts after every optimizer step that pruned weights are zero."""

    def __init__(self):
        super().__init__()
        self.checked = 0

    def on_train_batch_end(self, batch, logs=None):
        sync(self.model)
        assert_weights_follow_masks(self.model)
        self.checked += 1
