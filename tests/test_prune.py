import os
import warnings

import keras
import numpy as np
import pytest
from conftest import Bilinear
from conftest import assert_exact_sparsity
from conftest import build_simple_dense_model
from conftest import compile_model
from conftest import pruned_pairs
from conftest import sync
from conftest import to_numpy
from conftest import toy_data

import keras_sparsity as sparsity
from keras_sparsity import PruneLowMagnitude

L = keras.layers
EVERY_STEP = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)


def wrappers(model):
    return sparsity.walk.pruning_wrappers(model)


def functional_model():
    inputs = keras.Input((10,))
    a = L.Dense(8, activation="relu")(inputs)
    b = L.Dense(8, activation="relu")(inputs)
    x = L.Add()([a, b])
    x = L.Dropout(0.1)(x)
    return keras.Model(inputs, L.Dense(5)(x))


def nested_model():
    inner = keras.Sequential(
        [
            keras.Input((10,)),
            L.Dense(8, activation="relu"),
            L.BatchNormalization(),
        ],
        name="inner",
    )
    inputs = keras.Input((10,))
    return keras.Model(inputs, L.Dense(5)(inner(inputs)))


@pytest.mark.parametrize(
    "build, num_wrappers",
    [(build_simple_dense_model, 2), (functional_model, 3), (nested_model, 2)],
    ids=["sequential", "functional", "nested"],
)
def test_models_are_pruned_to_exact_sparsity(build, num_wrappers):
    model = build()
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=EVERY_STEP)
    assert len(wrappers(pruned)) == num_wrappers
    compile_model(pruned)
    x, y = toy_data(num_samples=32)
    pruned.fit(
        x, y, batch_size=8, verbose=0, callbacks=[sparsity.UpdatePruningStep()]
    )
    assert_exact_sparsity(pruned, 0.5)


def test_original_model_is_left_untouched():
    model = compile_model(functional_model())
    before = [w.copy() for w in model.get_weights()]
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=EVERY_STEP)
    x, y = toy_data(num_samples=16)
    np.testing.assert_allclose(
        to_numpy(model(x)), to_numpy(pruned(x)), rtol=1e-5, atol=1e-6
    )
    compile_model(pruned).fit(x, y, batch_size=8, verbose=0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert not wrappers(model)
    assert all(v.constraint is None for v in model.weights)
    assert model.optimizer is not None
    assert pruned.optimizer is not model.optimizer


def test_public_api_is_exactly_the_expected_names():
    assert sorted(sparsity.__all__) == sorted(
        [
            "ConstantSparsity",
            "Criterion",
            "Magnitude",
            "Movement",
            "Saliency",
            "RigL",
            "SET",
            "StaticSparse",
            "oneshot",
            "shrink",
            "structural",
            "prune_channels",
            "PruneChannels",
            "PolynomialDecay",
            "PrunableLayer",
            "PruneForLatencyOnXNNPack",
            "PruneLowMagnitude",
            "PruningPolicy",
            "PruningSchedule",
            "PruningSummaries",
            "SparsityOptimizer",
            "UpdatePruningStep",
            "describe_litert",
            "export_litert",
            "load_compressed",
            "prune_low_magnitude",
            "prune_scope",
            "report",
            "save_compressed",
            "strip_pruning",
            "unpruned_layers",
        ]
    )
    for name in sparsity.__all__:
        assert getattr(sparsity, name).__doc__


def test_keras_ops_in_a_functional_graph_are_kept():
    inputs = keras.Input((10,))
    x = L.Dense(10)(inputs)
    x = keras.ops.relu(x + inputs)
    model = keras.Model(inputs, L.Dense(5)(x))
    pruned = sparsity.prune_low_magnitude(model, EVERY_STEP)
    assert len(wrappers(pruned)) == 2
    x_, y_ = toy_data(num_samples=8)
    np.testing.assert_allclose(
        to_numpy(pruned(x_)), to_numpy(model(x_)), rtol=1e-5, atol=1e-6
    )
    final = sparsity.strip_pruning(pruned)
    assert final.get_config() == model.get_config()


def test_list_of_layers_is_wrapped_element_wise():
    done = PruneLowMagnitude(L.Dense(2))
    layers = sparsity.prune_low_magnitude(
        [L.Dense(3), done, L.Dropout(0.1)], pruning_schedule=EVERY_STEP
    )
    assert all(isinstance(layer, PruneLowMagnitude) for layer in layers)
    assert layers[1] is done
    assert layers[0].pruning_schedule == EVERY_STEP


def test_unsupported_layers_in_a_model_are_skipped_with_a_warning():
    model = keras.Sequential(
        [keras.Input((3,)), Bilinear(name="bilinear"), L.Dense(5)]
    )
    with pytest.warns(UserWarning, match=r"bilinear \(Bilinear\)"):
        pruned = sparsity.prune_low_magnitude(model)
    assert [type(layer).__name__ for layer in pruned.layers] == [
        "Bilinear",
        "PruneLowMagnitude",
    ]
    assert [layer.name for layer in sparsity.unpruned_layers(pruned)] == [
        "bilinear"
    ]
    with pytest.raises(ValueError, match="Bilinear is not supported"):
        sparsity.prune_low_magnitude(model, strict=True)
    recurrent = keras.Sequential([keras.Input((4, 3)), L.LSTM(6), L.Dense(5)])
    pruned = sparsity.prune_low_magnitude(recurrent, strict=True)
    assert len(wrappers(pruned)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sparsity.prune_low_magnitude(build_simple_dense_model())


def test_bad_objects_are_rejected_with_tfmot_message():
    with pytest.raises(ValueError, match="can only prune an object of the"):
        sparsity.prune_low_magnitude(object())


def test_policy_with_a_single_layer_is_an_error():
    class Everything:
        def allow_pruning(self, layer):
            return True

        def ensure_model_supports_pruning(self, model):
            pass

    with pytest.raises(ValueError, match="pruning_policy"):
        sparsity.prune_low_magnitude(L.Dense(3), pruning_policy=Everything())


def test_policy_chooses_layers_of_a_model():
    class FirstOnly:
        def allow_pruning(self, layer):
            return layer.name == "first"

        def ensure_model_supports_pruning(self, model):
            pass

    model = keras.Sequential(
        [keras.Input((10,)), L.Dense(8, name="first"), L.Dense(5)]
    )
    pruned = sparsity.prune_low_magnitude(model, pruning_policy=FirstOnly())
    assert [w.layer.name for w in wrappers(pruned)] == ["first"]


def test_bad_arguments_leave_the_model_untouched():
    model = build_simple_dense_model()
    with pytest.raises(ValueError, match="block_pooling_type"):
        sparsity.prune_low_magnitude(model, block_pooling_type="MIN")
    with pytest.raises(ValueError, match="sparsity_m_by_n"):
        sparsity.prune_low_magnitude(model, sparsity_m_by_n=(4, 2))
    assert all(v.constraint is None for v in model.weights)


def test_strip_pruning_returns_plain_sparse_copy_with_original_config():
    model = functional_model()
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=EVERY_STEP)
    compile_model(pruned)
    x, y = toy_data(num_samples=16)
    pruned.fit(x, y, batch_size=8, verbose=0)
    final = sparsity.strip_pruning(pruned)
    assert final.get_config() == model.get_config()
    assert not wrappers(final)
    assert final.optimizer is not pruned.optimizer
    pruned_ids = {id(v) for v in pruned.weights}
    assert not any(id(v) in pruned_ids for v in final.weights)
    np.testing.assert_allclose(
        to_numpy(final(x)), to_numpy(pruned(x)), rtol=1e-5, atol=1e-6
    )
    for layer in final.layers:
        if isinstance(layer, L.Dense):
            kernel = to_numpy(layer.kernel)
            assert np.count_nonzero(kernel) == kernel.size // 2


def test_strip_pruning_rejects_non_models():
    with pytest.raises(ValueError, match="keras.Model"):
        sparsity.strip_pruning("model")


def test_stripped_layer_and_nested_model():
    model = nested_model()
    pruned = sparsity.prune_low_magnitude(model, EVERY_STEP)
    compile_model(pruned).fit(*toy_data(num_samples=8), verbose=0)
    final = sparsity.strip_pruning(pruned)
    assert final.get_config() == model.get_config()
    assert not wrappers(final)
    layer = sparsity.strip_pruning(wrappers(pruned)[0])
    assert isinstance(layer, L.Dense)
    assert np.count_nonzero(to_numpy(layer.kernel)) == 40


def test_saved_pruned_model_loads_without_scope(tmp_path):
    pruned = sparsity.prune_low_magnitude(
        build_simple_dense_model(),
        pruning_schedule=sparsity.PolynomialDecay(0.2, 0.6, 0, 4, frequency=1),
        sparsity_m_by_n=None,
    )
    compile_model(pruned)
    x, y = toy_data(num_samples=16)
    pruned.fit(x, y, batch_size=8, verbose=0)
    path = os.fspath(tmp_path / "pruned.keras")
    pruned.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.layers[0], PruneLowMagnitude)
    schedule = pruned.layers[0].pruning_schedule
    assert restored.layers[0].pruning_schedule == schedule
    assert int(to_numpy(restored.optimizer.iterations)) == 2
    for (_, w1, m1), (_, w2, m2) in zip(
        pruned_pairs(pruned), pruned_pairs(restored)
    ):
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(w1, w2)
    with sparsity.prune_scope():
        keras.saving.load_model(path)


def test_interrupted_and_resumed_training_ends_with_the_same_masks(tmp_path):
    schedule = sparsity.PolynomialDecay(0.3, 0.8, 0, 6, frequency=2)
    x, y = toy_data(num_samples=64)
    base = build_simple_dense_model()

    straight = compile_model(sparsity.prune_low_magnitude(base, schedule))
    straight.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    first = compile_model(sparsity.prune_low_magnitude(base, schedule))
    first.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = os.fspath(tmp_path / "half.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    resumed.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)

    sync(straight)
    sync(resumed)
    assert_exact_sparsity(resumed, 0.8)
    for (_, w1, m1), (_, w2, m2) in zip(
        pruned_pairs(straight), pruned_pairs(resumed)
    ):
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_allclose(w1, w2, rtol=1e-5, atol=1e-6)


def test_stripped_model_saves_and_loads_as_plain_keras(tmp_path):
    pruned = sparsity.prune_low_magnitude(
        build_simple_dense_model(), EVERY_STEP
    )
    compile_model(pruned).fit(*toy_data(num_samples=8), verbose=0)
    path = os.fspath(tmp_path / "final.keras")
    sparsity.strip_pruning(pruned).save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [
        "Dense",
        "Dense",
    ]
    assert [int(np.count_nonzero(w)) for w in loaded.get_weights()[::2]] == [
        40,
        20,
    ]


def test_misspelt_keyword_for_a_model_is_an_error():
    model = build_simple_dense_model()
    with pytest.raises(TypeError, match="pruning_shedule"):
        sparsity.prune_low_magnitude(
            model, pruning_shedule=sparsity.ConstantSparsity(0.9, 0)
        )


def test_quantized_model_is_an_error_and_left_untouched():
    model = build_simple_dense_model()
    model.quantize("int8")
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="quantized"):
        sparsity.prune_low_magnitude(model)
    for value, saved in zip(model.get_weights(), before):
        np.testing.assert_array_equal(value, saved)


def test_inplace_is_refused_for_plain_graph_models_and_single_layers():
    with pytest.raises(ValueError, match="inplace"):
        sparsity.prune_low_magnitude(build_simple_dense_model(), inplace=True)
    with pytest.raises(ValueError, match="inplace"):
        sparsity.prune_low_magnitude(keras.layers.Dense(2), inplace=True)
