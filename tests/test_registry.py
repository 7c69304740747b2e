import keras
import pytest
from conftest import Bilinear

from keras_sparsity import PrunableLayer
from keras_sparsity import registry

L = keras.layers


def built(layer, shape):
    layer.build(shape)
    return layer


@pytest.mark.parametrize(
    "layer, shape, expected",
    [
        (L.Dense(3), (None, 4), [("kernel", (0,))]),
        (L.Conv2D(2, 3), (None, 5, 5, 2), [("kernel", (0, 1, 2))]),
        (L.Conv1DTranspose(2, 3), (None, 5, 2), [("kernel", (0, 2))]),
        (L.Conv2DTranspose(2, 3), (None, 5, 5, 2), [("kernel", (0, 1, 3))]),
        (L.DepthwiseConv2D(3), (None, 5, 5, 2), [("kernel", (0, 1))]),
        (
            L.SeparableConv2D(2, 3),
            (None, 5, 5, 2),
            [("depthwise_kernel", (0, 1)), ("pointwise_kernel", (0, 1, 2))],
        ),
        (L.Embedding(10, 3), (None, 4), [("embeddings", (0,))]),
        (
            L.LSTM(3),
            (None, 2, 4),
            [("kernel", (0,)), ("recurrent_kernel", (0,))],
        ),
        (
            L.RNN([L.GRUCell(3), L.SimpleRNNCell(2)]),
            (None, 2, 4),
            [("kernel", (0,)), ("recurrent_kernel", (0,))] * 2,
        ),
        (
            L.Bidirectional(L.GRU(3)),
            (None, 2, 4),
            [("kernel", (0,)), ("recurrent_kernel", (0,))] * 2,
        ),
        (L.TimeDistributed(L.Dense(3)), (None, 2, 4), [("kernel", (0,))]),
        (
            L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3)),
            (None, 5, 4),
            [("kernel", (0,))],
        ),
        (
            L.ConvLSTM1D(2, 3),
            (None, 2, 6, 3),
            [("kernel", (0, 1)), ("recurrent_kernel", (0, 1))],
        ),
    ],
)
def test_prunable_weights_and_their_reduction_axes(layer, shape, expected):
    layer = built(layer, shape)
    assert registry.is_prunable(layer)
    found = registry.prunable_weights(layer)
    assert [(p.variable.name, p.reduction_axes) for p in found] == expected


def test_multi_head_attention_prunes_its_four_projections():
    layer = L.MultiHeadAttention(2, 8)
    layer.build((None, 6, 10), (None, 6, 10))
    found = registry.prunable_weights(layer)
    assert [(tuple(p.variable.shape), p.reduction_axes) for p in found] == [
        ((10, 2, 8), (0,)),
        ((10, 2, 8), (0,)),
        ((10, 2, 8), (0,)),
        ((2, 8, 10), (0, 1)),
    ]


def test_matching_is_by_isinstance():
    class MyConv(L.Conv2D):
        pass

    assert registry.is_prunable(MyConv(2, 3))


def test_layers_without_kernels_have_nothing_to_prune():
    for layer in [
        L.Dropout(0.1),
        L.MaxPooling2D(),
        L.BatchNormalization(),
        L.Add(),
        L.Flatten(),
    ]:
        assert registry.has_nothing_to_prune(layer)
        assert not registry.is_prunable(layer)
    assert not registry.has_nothing_to_prune(built(Bilinear(), (None, 3)))
    assert not registry.is_prunable(Bilinear())


def test_prunable_layer_protocols():
    class Mixin(L.Dense, PrunableLayer):
        def get_prunable_weights(self):
            return [self.bias]

    class Duck(L.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 2))

        def get_prunable_weights(self):
            return [self.w]

    found = registry.prunable_weights(built(Mixin(3), (None, 4)))
    assert [p.variable.name for p in found] == ["bias"]
    assert registry.is_prunable(Duck())
    assert len(registry.prunable_weights(built(Duck(), (None, 4)))) == 1


def test_non_variable_prunable_weight_is_a_clear_error():
    class Bad(L.Dense, PrunableLayer):
        def get_prunable_weights(self):
            return [keras.ops.ones((2, 2))]

    with pytest.raises(ValueError, match="keras.Variable"):
        registry.prunable_weights(built(Bad(3), (None, 4)))
