import keras
import numpy as np
import pytest
from conftest import build_simple_dense_model
from conftest import compile_model
from conftest import expected_nonzeros
from conftest import pruned_pairs
from conftest import toy_data

import keras_sparsity as sparsity

EVERY_STEP = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)


def train(base, callbacks):
    model = sparsity.prune_low_magnitude(base, EVERY_STEP)
    compile_model(model)
    x, y = toy_data(num_samples=32)
    model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks)
    return model


def test_update_pruning_step_is_optional_and_changes_nothing():
    base = build_simple_dense_model()
    with_callback = train(base, [sparsity.UpdatePruningStep()])
    without = train(base, [])
    pairs = list(zip(pruned_pairs(with_callback), pruned_pairs(without)))
    assert len(pairs) == 2
    for (_, w1, m1), (_, w2, m2) in pairs:
        # Pruned in both runs (not two untouched models that agree) ...
        assert m1.sum() == expected_nonzeros(m1.size, 0.5)
        assert np.count_nonzero(w1) <= m1.sum()
        assert np.all(w1[m1 == 0] == 0)
        # ... and the same masks and weights, bit for bit.
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(w1, w2)


def test_update_pruning_step_warns_on_a_model_without_pruning():
    model = compile_model(build_simple_dense_model())
    with pytest.warns(UserWarning, match="no pruned layers"):
        model.fit(
            *toy_data(num_samples=8),
            verbose=0,
            callbacks=[sparsity.UpdatePruningStep()],
        )


def test_pruning_wrappers_finds_nested_wrappers():
    inner = keras.Sequential([keras.Input((10,)), keras.layers.Dense(4)])
    inputs = keras.Input((10,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    pruned = sparsity.prune_low_magnitude(model)
    found = sparsity.walk.pruning_wrappers(pruned)
    # One wrapper inside the nested model, one outside, each once.
    assert sorted(w.layer.units for w in found) == [2, 4]
    assert found[0] is not found[1]
