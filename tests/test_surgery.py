"""Models of every kind: their prunable sublayers, at any depth, are swapped
for wrappers in a copy of the same class (or in the model, in place)."""

import os

import keras
import numpy as np
import pytest
from conftest import assert_exact_sparsity
from conftest import compile_model
from conftest import pruned_pairs
from conftest import to_numpy
from conftest import toy_data

import keras_sparsity as sparsity
from keras_sparsity import PruneLowMagnitude
from keras_sparsity import _compat
from keras_sparsity import surgery

L = keras.layers
EVERY_STEP = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)


@keras.saving.register_keras_serializable(package="tests")
class Block(L.Layer):
    """A custom layer holding sublayers and a weight of its own."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = L.Dense(units, activation="relu")
        self.norm = L.LayerNormalization()

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.norm.build(input_shape[:-1] + (self.units,))
        self.scale = self.add_weight(shape=(self.units,), initializer="ones")

    def call(self, x):
        return self.norm(self.dense(x)) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="tests")
class Tower(keras.Model):
    """Layers in a list and a dict, a shared layer, a nested block."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.stack = [L.Dense(units, activation="relu") for _ in range(2)]
        self.heads = {"logits": L.Dense(5)}
        self.shared = L.Dense(units)
        self.block = Block(units)

    def call(self, x):
        for layer in self.stack:
            x = layer(x)
        x = self.shared(self.shared(x))
        return self.heads["logits"](self.block(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def built_tower():
    model = Tower()
    model(np.zeros((1, 10), "float32"))
    return model


def test_subclassed_model_prunes_every_sublayer_and_leaves_the_original():
    model = built_tower()
    before = [w.copy() for w in model.get_weights()]
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=EVERY_STEP)
    assert isinstance(pruned, Tower) and pruned is not model
    assert all(isinstance(layer, PruneLowMagnitude) for layer in pruned.stack)
    assert isinstance(pruned.heads["logits"], PruneLowMagnitude)
    assert isinstance(pruned.block.dense, PruneLowMagnitude)
    assert not isinstance(pruned.block.norm, PruneLowMagnitude)
    assert len(sparsity.walk.pruning_wrappers(pruned)) == 5
    x, y = toy_data(num_samples=32)
    np.testing.assert_allclose(
        to_numpy(pruned(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-6
    )
    compile_model(pruned).fit(x, y, batch_size=8, verbose=0)
    assert_exact_sparsity(pruned, 0.5)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert not sparsity.walk.pruning_wrappers(model)


def test_shared_sublayer_gets_one_wrapper():
    pruned = sparsity.prune_low_magnitude(built_tower(), EVERY_STEP)
    wrapper = pruned.shared
    assert isinstance(wrapper, PruneLowMagnitude)
    ids = [id(w) for w in sparsity.walk.pruning_wrappers(pruned)]
    assert ids.count(id(wrapper)) == 1


def test_strip_and_save_a_pruned_subclassed_model(tmp_path):
    model = built_tower()
    pruned = sparsity.prune_low_magnitude(model, EVERY_STEP)
    x, y = toy_data(num_samples=16)
    compile_model(pruned).fit(x, y, batch_size=8, verbose=0)
    final = sparsity.strip_pruning(pruned)
    assert isinstance(final, Tower)
    assert not sparsity.walk.pruning_wrappers(final)
    assert final.get_config() == model.get_config()
    np.testing.assert_allclose(
        to_numpy(final(x)), to_numpy(pruned(x)), rtol=1e-5, atol=1e-6
    )
    path = os.fspath(tmp_path / "tower.keras")
    final.save(path)
    loaded = keras.saving.load_model(path)
    kernels = [
        to_numpy(loaded.stack[0].kernel),
        to_numpy(loaded.block.dense.kernel),
    ]
    assert [int(np.count_nonzero(k)) for k in kernels] == [40, 32]


def test_pruned_subclassed_checkpoint_round_trips_through_weights(tmp_path):
    schedule = sparsity.PolynomialDecay(0.2, 0.6, 0, 4, frequency=1)
    model = built_tower()
    pruned = compile_model(sparsity.prune_low_magnitude(model, schedule))
    x, y = toy_data(num_samples=16)
    pruned.fit(x, y, batch_size=8, verbose=0)
    path = os.fspath(tmp_path / "tower.weights.h5")
    pruned.save_weights(path)
    again = sparsity.prune_low_magnitude(model, schedule)
    again.load_weights(path)
    for (_, w1, m1), (_, w2, m2) in zip(
        pruned_pairs(pruned), pruned_pairs(again)
    ):
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(w1, w2)


def test_subclassed_model_inside_a_functional_model():
    tower = built_tower()
    inputs = keras.Input((10,))
    model = keras.Model(inputs, L.Dense(3)(tower(inputs)))
    pruned = sparsity.prune_low_magnitude(model, EVERY_STEP)
    assert len(sparsity.walk.pruning_wrappers(pruned)) == 6
    compile_model(pruned).fit(
        *toy_data(num_samples=16, num_classes=3), batch_size=8, verbose=0
    )
    assert_exact_sparsity(pruned, 0.5)
    final = sparsity.strip_pruning(pruned)
    assert not sparsity.walk.pruning_wrappers(final)


def test_unbuilt_or_unrebuildable_subclassed_models_are_clear_errors():
    with pytest.raises(ValueError, match="not built yet"):
        sparsity.prune_low_magnitude(Tower())

    class NoConfig(keras.Model):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def call(self, x):
            return self.layer(x)

    model = NoConfig(L.Dense(3))
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="get_config"):
        sparsity.prune_low_magnitude(model)


def test_replace_swaps_attributes_lists_dicts_and_tuples():
    holder = L.Layer()
    a, b = L.Dense(1), L.Dense(2)
    holder.direct = a
    holder.listed = [a, L.Dense(3)]
    holder.mapped = {"k": a}
    holder.paired = (a, 1)
    surgery.replace(holder, a, b)
    assert holder.direct is b and holder.listed[0] is b
    assert holder.mapped["k"] is b and holder.paired[0] is b
    assert b in _compat.sublayers(holder) and a not in _compat.sublayers(holder)


def test_layers_inside_a_custom_layer_of_a_functional_model_are_pruned():
    inputs = keras.Input((10,))
    outputs = L.Dense(5)(Block(8, name="block")(inputs))
    model = keras.Model(inputs, outputs)
    pruned = sparsity.prune_low_magnitude(model, EVERY_STEP)
    assert sparsity.unpruned_layers(pruned) == []
    assert len(sparsity.walk.pruning_wrappers(pruned)) == 2
    block = pruned.get_layer("block")
    assert isinstance(block.dense, PruneLowMagnitude)
    assert not isinstance(model.get_layer("block").dense, PruneLowMagnitude)
    compile_model(pruned)
    pruned.fit(*toy_data(), batch_size=8, verbose=0)
    assert_exact_sparsity(pruned, 0.5)
    final = sparsity.strip_pruning(pruned)
    np.testing.assert_allclose(
        to_numpy(final(np.ones((2, 10), "float32"))),
        to_numpy(pruned(np.ones((2, 10), "float32"))),
        atol=1e-6,
    )


@keras.saving.register_keras_serializable(package="tests")
class Residual(keras.Model):
    """A functional subclass, as KerasHub writes its backbones."""

    def __init__(self, units=8, **kwargs):
        inputs = keras.Input((10,))
        x = Block(units, name="block")(inputs)
        outputs = L.Dense(5, name="head")(L.Dense(units)(x) + x)
        super().__init__(inputs, outputs, **kwargs)
        self.units = units

    def logits(self, x):
        return self(x)

    def get_config(self):
        return {"units": self.units, "name": self.name}


def test_functional_subclass_keeps_its_class_and_methods():
    model = Residual()
    pruned = sparsity.prune_low_magnitude(model, EVERY_STEP)
    assert type(pruned) is Residual
    assert len(sparsity.walk.pruning_wrappers(pruned)) == 3
    head = pruned.get_layer("prune_low_magnitude_head")
    assert isinstance(head, PruneLowMagnitude)
    compile_model(pruned)
    pruned.fit(*toy_data(), batch_size=8, verbose=0)
    assert_exact_sparsity(pruned, 0.5)
    x = np.ones((2, 10), "float32")
    final = sparsity.strip_pruning(pruned)
    assert type(final) is Residual and not sparsity.walk.pruning_wrappers(final)
    np.testing.assert_allclose(
        to_numpy(final.logits(x)), to_numpy(pruned.logits(x)), atol=1e-6
    )


class NoArguments(keras.Model):
    """The most common subclassed model: `__init__(self)`, no config."""

    def __init__(self):
        super().__init__()
        self.hidden = L.Dense(8, activation="relu")
        self.out = L.Dense(5)

    def call(self, x):
        return self.out(self.hidden(x))


class TakesALayer(keras.Model):
    def __init__(self, body):
        super().__init__()
        self.body = body
        self.out = L.Dense(5)

    def call(self, x):
        return self.out(self.body(x))


def test_subclassed_model_without_config_is_copied_or_pruned_in_place():
    model = NoArguments()
    model(np.zeros((1, 10), "float32"))
    pruned = sparsity.prune_low_magnitude(model, EVERY_STEP)
    assert type(pruned) is NoArguments and pruned is not model
    assert len(sparsity.walk.pruning_wrappers(pruned)) == 2
    np.testing.assert_array_equal(
        to_numpy(pruned.hidden.layer.kernel), to_numpy(model.hidden.kernel)
    )

    other = TakesALayer(L.Dense(8))
    other(np.zeros((1, 10), "float32"))
    with pytest.raises(ValueError, match="inplace=True"):
        sparsity.prune_low_magnitude(other, EVERY_STEP)
    same = sparsity.prune_low_magnitude(other, EVERY_STEP, inplace=True)
    assert same is other
    assert isinstance(other.body, PruneLowMagnitude)
    compile_model(other)
    other.fit(*toy_data(), batch_size=8, verbose=0)
    assert_exact_sparsity(other, 0.5)
    sparsity.strip_pruning(other, inplace=True)
    assert not isinstance(other.body, PruneLowMagnitude)
    assert np.count_nonzero(to_numpy(other.body.kernel)) == 40


class BrokenConfig(L.Layer):
    def call(self, x):
        return x * 2.0

    def get_config(self):
        raise AttributeError("no attribute 'rope_scaling_factor'")


def test_a_layer_with_a_broken_config_that_holds_no_weights_is_kept():
    inputs = keras.Input((10,))
    model = keras.Model(inputs, L.Dense(5)(BrokenConfig()(inputs)))
    pruned = sparsity.prune_low_magnitude(model, EVERY_STEP)
    assert len(sparsity.walk.pruning_wrappers(pruned)) == 1
    compile_model(pruned)
    pruned.fit(*toy_data(), batch_size=8, verbose=0)
    assert_exact_sparsity(pruned, 0.5)


def test_clone_function_recipe_leaves_the_base_model_untouched():
    base = keras.Sequential([keras.Input((10,)), L.Dense(8), L.Dense(5)])
    before = [w.copy() for w in base.get_weights()]

    def apply_pruning_to_dense(layer):
        if isinstance(layer, L.Dense):
            return sparsity.prune_low_magnitude(layer, EVERY_STEP)
        return layer

    pruned = keras.models.clone_model(
        base, clone_function=apply_pruning_to_dense
    )
    compile_model(pruned)
    pruned.fit(
        *toy_data(),
        batch_size=8,
        verbose=0,
        callbacks=[sparsity.UpdatePruningStep()],
    )
    assert_exact_sparsity(pruned, 0.5)
    for layer in base.layers:
        assert layer.kernel.constraint is None
    for value, saved in zip(base.get_weights(), before):
        np.testing.assert_array_equal(value, saved)
    compile_model(base, optimizer="sgd")  # training the base prunes nothing
    base.fit(*toy_data(), batch_size=8, verbose=0)
    assert all(np.all(w != 0) for w in base.get_weights()[::2])
