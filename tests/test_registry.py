import keras
import pytest

from keras_sparsity import PrunableLayer
from keras_sparsity import registry

L = keras.layers


def built(layer, shape):
    layer.build(shape)
    return layer


@pytest.mark.parametrize(
    "layer, shape, names",
    [
        (L.Dense(3), (None, 4), ["kernel"]),
        (L.Conv2D(2, 3), (None, 5, 5, 2), ["kernel"]),
        (L.Conv1DTranspose(2, 3), (None, 5, 2), ["kernel"]),
        (L.DepthwiseConv2D(3), (None, 5, 5, 2), ["kernel"]),
        (L.SeparableConv2D(2, 3), (None, 5, 5, 2),
         ["depthwise_kernel", "pointwise_kernel"]),
        (L.Embedding(10, 3), (None, 4), ["embeddings"]),
    ],
)
def test_prunable_weights_are_the_kernels(layer, shape, names):
    layer = built(layer, shape)
    assert registry.is_prunable(layer)
    assert [w.name for w in registry.prunable_weights(layer)] == names


def test_matching_is_by_isinstance():
    class MyConv(L.Conv2D):
        pass

    assert registry.is_prunable(MyConv(2, 3))


def test_layers_without_kernels_have_nothing_to_prune():
    for layer in [L.Dropout(0.1), L.MaxPooling2D(), L.BatchNormalization(),
                  L.Add(), L.Flatten()]:
        assert registry.has_nothing_to_prune(layer)
        assert not registry.is_prunable(layer)
    assert not registry.has_nothing_to_prune(built(L.LSTM(3), (None, 2, 4)))
    assert not registry.is_prunable(L.LSTM(3))


def test_prunable_layer_protocols():
    class Mixin(L.Dense, PrunableLayer):
        def get_prunable_weights(self):
            return [self.bias]

    class Duck(L.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 2))

        def get_prunable_weights(self):
            return [self.w]

    assert [w.name for w in
            registry.prunable_weights(built(Mixin(3), (None, 4)))] == ["bias"]
    assert registry.is_prunable(Duck())
    assert len(registry.prunable_weights(built(Duck(), (None, 4)))) == 1


def test_non_variable_prunable_weight_is_a_clear_error():
    class Bad(L.Dense, PrunableLayer):
        def get_prunable_weights(self):
            return [keras.ops.ones((2, 2))]

    with pytest.raises(ValueError, match="keras.Variable"):
        registry.prunable_weights(built(Bad(3), (None, 4)))
