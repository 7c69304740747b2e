import keras
import pytest

from keras_sparsity.macs import multiply_accumulates
from keras_sparsity.macs import weight_uses

# File formats and shape arithmetic: no backend code runs.
pytestmark = pytest.mark.backend_independent

L = keras.layers


def built(layer, input_shape):
    layer.build(input_shape)
    return layer


def test_dense_on_a_sequence_is_used_once_per_token():
    dense = built(L.Dense(4), (None, 10, 8))
    assert weight_uses(dense)[id(dense.kernel)] == ("kernel", "dense", 10)
    flat = built(L.Dense(4), (None, 8))
    assert weight_uses(flat)[id(flat.kernel)] == ("kernel", "dense", 1)


def test_unknown_sequence_length_gives_unknown_uses():
    dense = built(L.Dense(4), (None, None, 8))
    assert weight_uses(dense)[id(dense.kernel)][2] is None
    assert multiply_accumulates(None, 32) is None


def test_convolution_is_used_once_per_output_position():
    conv = built(L.Conv2D(8, 3, strides=2, padding="same"), (None, 10, 10, 4))
    assert weight_uses(conv)[id(conv.kernel)] == ("kernel", "conv", 25)
    assert multiply_accumulates(25, 3 * 3 * 4 * 8) == 7200


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_depthwise_positions_follow_the_data_format(data_format):
    shape = (None, 8, 8, 3) if data_format == "channels_last" else (
        None, 3, 8, 8
    )
    layer = built(L.DepthwiseConv2D(3, data_format=data_format), shape)
    assert weight_uses(layer)[id(layer.kernel)][1:] == ("depthwise", 36)


def test_recurrent_kernels_are_used_once_per_time_step():
    lstm = built(L.LSTM(6), (None, 7, 5))
    uses = weight_uses(lstm)
    assert uses[id(lstm.cell.kernel)][1:] == ("recurrent", 7)
    assert uses[id(lstm.cell.recurrent_kernel)][1:] == ("recurrent", 7)


def test_time_distributed_multiplies_the_inner_uses():
    layer = built(L.TimeDistributed(L.Dense(4)), (None, 6, 8))
    assert weight_uses(layer)[id(layer.layer.kernel)][2] == 6


def test_embedding_is_a_lookup():
    embedding = built(L.Embedding(50, 8), (None, 12))
    assert weight_uses(embedding)[id(embedding.embeddings)][1:] == (
        "embedding",
        0,
    )
