"""Each private Keras access of `_compat`, exercised: a Keras upgrade that
moves one fails here first."""

import keras
import numpy as np

from keras_sparsity import _compat

L = keras.layers


class Holder(L.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = L.Dense(2, name="inner")
        self.items = [L.Dense(2, name="listed")]
        self.named = {"a": L.Dense(2, name="keyed")}

    def call(self, x):
        return self.inner(x) + self.items[0](x) + self.named["a"](x)


def graph_model():
    inputs = keras.Input((3,))
    x = L.Dense(4, name="first")(inputs)
    return keras.Model(inputs, L.Dense(2, name="second")(x))


def test_model_kinds():
    class Sub(keras.Model):
        def __init__(self, **kwargs):
            inputs = keras.Input((3,))
            super().__init__(inputs, L.Dense(2)(inputs), **kwargs)

    model = graph_model()
    assert _compat.is_functional(model) and _compat.is_plain_graph(model)
    assert _compat.is_plain_graph(keras.Sequential([keras.Input((3,))]))
    assert _compat.is_functional(Sub()) and not _compat.is_plain_graph(Sub())
    assert not _compat.is_functional(Holder())


def test_sublayers_and_all_sublayers():
    holder = Holder()
    holder(np.zeros((1, 3), "float32"))
    names = [layer.name for layer in _compat.sublayers(holder)]
    assert names == ["inner", "listed", "keyed"]
    model = keras.Sequential([keras.Input((3,)), holder])
    found = [layer.name for layer in _compat.all_sublayers(model)]
    assert len(found) == len(set(found))
    assert {holder.name, "inner", "listed", "keyed"} <= set(found)


def test_untrack_replaces_the_record_of_a_sublayer():
    holder = Holder()
    holder(np.zeros((1, 3), "float32"))
    new = L.Dense(2, name="new")
    _compat.untrack(holder, holder.inner, new)
    assert [layer.name for layer in _compat.sublayers(holder)][0] == "new"


def test_swap_in_graph_makes_the_model_call_the_new_layer():
    model = graph_model()
    second = model.get_layer("second")

    class Doubled(L.Layer):
        def call(self, x):
            return 2.0 * second(x)

    doubled = Doubled(name="doubled")
    x = np.ones((1, 3), "float32")
    before = keras.ops.convert_to_numpy(model(x))
    _compat.swap_in_graph(model, second, doubled)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), 2.0 * before, rtol=1e-6
    )
    assert doubled in model.layers and second not in model.layers
    assert list(doubled._inbound_nodes) == list(second._inbound_nodes)


def test_producing_node():
    inputs = keras.Input((3,))
    dense = L.Dense(2)
    node = _compat.producing_node(dense(inputs))
    assert node.operation is dense


def test_storage_of_plain_and_tracked_containers():
    items, named = [1], {"a": 1}
    assert _compat.storage(items) is items
    assert _compat.storage(named) is named
    holder = Holder()
    for container in (holder.items, holder.named):
        inner = _compat.storage(container)
        assert type(inner) in (list, dict) or inner is container
        assert len(inner) == 1


def test_attribute_layers():
    holder = Holder()
    names = {layer.name for layer in _compat.attribute_layers(holder)}
    assert "inner" in names


def test_optimizer_slots_finds_each_optimizers_state_of_a_variable():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    expected = {
        keras.optimizers.Adam: 2,
        keras.optimizers.SGD: 0,
        keras.optimizers.RMSprop: 1,
    }
    for cls, count in expected.items():
        optimizer = cls()
        optimizer.build(layer.trainable_variables)
        slots = _compat.optimizer_slots(optimizer, layer.kernel)
        assert len(slots) == count, cls
        assert all(tuple(s.shape) == (4, 3) for s in slots)
    momentum = keras.optimizers.SGD(momentum=0.9)
    momentum.build(layer.trainable_variables)
    assert len(_compat.optimizer_slots(momentum, layer.kernel)) == 1
    assert _compat.optimizer_slots(momentum, keras.Variable([1.0])) == []


def test_graph_calls_lists_each_call_in_order_with_its_tensors():
    inputs = keras.Input((3,))
    a = L.Dense(4, name="a")(inputs)
    b = L.Dense(4, name="b")(inputs)
    model = keras.Model(inputs, L.Add(name="sum")([a, b]))
    found_inputs, outputs, calls = _compat.graph_calls(model)
    names = [operation.name for operation, _, _ in calls]
    assert sorted(names[:2]) == ["a", "b"] and names[2] == "sum"
    assert calls[2][1] == [a, b] and calls[2][2] == list(outputs)
    assert found_inputs == [inputs]
    chain = keras.Sequential([keras.Input((3,)), L.Dense(2, name="only")])
    _, _, calls = _compat.graph_calls(chain)
    assert [operation.name for operation, _, _ in calls] == ["only"]
    assert _compat.graph_calls(keras.Sequential([L.Dense(2)])) is None
