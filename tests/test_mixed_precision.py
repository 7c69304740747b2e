"""Pruning under mixed precision: masks are float32, weights exactly sparse."""

import keras
import pytest
from conftest import CheckEveryBatch
from conftest import assert_exact_sparsity
from conftest import compile_model
from conftest import toy_data

import keras_sparsity as sparsity

L = keras.layers


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def policy(request):
    keras.mixed_precision.set_dtype_policy(request.param)
    yield request.param
    keras.mixed_precision.set_dtype_policy("float32")


def test_pruning_under_mixed_precision(policy):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, activation="relu"),
            L.Flatten(),
            L.Dense(8, activation="relu"),
            L.Dense(5, dtype="float32"),
        ]
    )
    schedule = sparsity.PolynomialDecay(0.3, 0.75, 0, 3, frequency=1)
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    compile_model(pruned)
    if policy == "mixed_float16":
        assert isinstance(pruned.optimizer, keras.optimizers.LossScaleOptimizer)
    wrapper = pruned.layers[0]
    assert wrapper.masks[0].dtype == "float32"
    assert wrapper.layer.kernel.dtype == "float32"
    assert wrapper.layer.compute_dtype == policy.split("_")[1]
    check = CheckEveryBatch()
    x, y = toy_data((6, 6, 2), num_samples=32)
    pruned.fit(x, y, batch_size=8, verbose=0, callbacks=[check])
    assert check.checked == 4
    assert_exact_sparsity(pruned, 0.75)
    final = sparsity.strip_pruning(pruned)
    assert final.layers[0].compute_dtype == policy.split("_")[1]
