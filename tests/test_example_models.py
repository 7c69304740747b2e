"""Runs the overview's example models tiny and checks their stripped kernels.

`examples/mobilenet_mnist.py` (dense, unstructured 50 %, 2:4) and
`examples/lstm_shakespeare.py` (80 %) are run for a few optimizer steps on
the current backend, on the workplace's MNIST and tiny Shakespeare files.
"""

import math
import pathlib
import sys

import keras
import numpy as np
import pytest
from conftest import expected_nonzeros

from keras_sparsity import PruneLowMagnitude

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"
DATA = pathlib.Path(__file__).parents[2] / "shared" / "data"
MNIST_DIR = DATA / "mnist"
TEXT = DATA / "tinyshakespeare.txt"

pytestmark = pytest.mark.requires_data("mnist", "tinyshakespeare.txt")
sys.path.insert(0, str(EXAMPLES))

import lstm_shakespeare  # noqa: E402
import mobilenet_mnist  # noqa: E402

STEM_FILTERS = 8
BLOCK_FILTERS = (16,)
# (kernel shape, axis of its 2:4 groups) of the tiny MobileNet, in order.
MOBILENET_KERNELS = [
    ((3, 3, 1, 8), 2),  # stem: one input channel
    ((3, 3, 8, 1), 1),  # depthwise: grouped along its 3 columns
    ((1, 1, 8, 16), 2),  # pointwise
    ((16, 10), 0),  # logits
]


def _nonzeros(model):
    return [
        (value.shape, np.count_nonzero(value))
        for value in model.get_weights()
        if value.ndim >= 2
    ]


@pytest.fixture(scope="module")
def mobilenet_results():
    """The three variants; 2 optimizer steps each (256 images, batch 128).

    With 2 fine-tuning steps the schedule's `end_step` is 0: the target is
    reached at the first step.
    """
    data = mobilenet_mnist.load_mnist(str(MNIST_DIR), 256, 64)
    return mobilenet_mnist.run_variants(
        lambda: mobilenet_mnist.build_mobilenet(
            keras, STEM_FILTERS, BLOCK_FILTERS
        ),
        data,
        epochs=1,
        fine_tune_epochs=1,
    )


@pytest.fixture(scope="module")
def lstm_results():
    """Dense and 80 % sparse tiny LSTM; 1 optimizer step each."""
    train, val, vocabulary_size = lstm_shakespeare.load_windows(
        str(TEXT), seq_len=16, num_train=64, num_val=16
    )
    return lstm_shakespeare.run(
        train,
        val,
        vocabulary_size,
        epochs=1,
        fine_tune_epochs=1,
        embedding_dim=8,
        units=8,
    )


def test_mobilenet_variants_are_plain_models_of_the_expected_kernels(
    mobilenet_results,
):
    assert list(mobilenet_results) == ["dense", "unstructured 50 %", "2:4"]
    for result in mobilenet_results.values():
        model = result["model"]
        assert not any(
            isinstance(layer, PruneLowMagnitude) for layer in model.layers
        )
        shapes = [shape for shape, _ in _nonzeros(model)]
        assert shapes == [shape for shape, _ in MOBILENET_KERNELS]
        assert 0.0 <= result["accuracy"] <= 1.0


def test_mobilenet_dense_model_is_not_pruned(mobilenet_results):
    dense = mobilenet_results["dense"]
    assert dense["sparsity"] == 0.0
    for shape, nonzeros in _nonzeros(dense["model"]):
        assert nonzeros == math.prod(shape)


def test_mobilenet_unstructured_keeps_exactly_half_of_each_kernel(
    mobilenet_results,
):
    result = mobilenet_results["unstructured 50 %"]
    for shape, nonzeros in _nonzeros(result["model"]):
        assert nonzeros == expected_nonzeros(math.prod(shape), 0.5), shape
    assert result["sparsity"] == 0.5  # every kernel size here is even


def test_mobilenet_2_by_4_groups_keep_exactly_two_of_four(mobilenet_results):
    result = mobilenet_results["2:4"]
    kernels = [v for v in result["model"].get_weights() if v.ndim >= 2]
    zeros, size, groups = 0, 0, 0
    for value, (shape, axis) in zip(kernels, MOBILENET_KERNELS):
        moved = np.moveaxis(value, axis, -1)
        for start in range(0, moved.shape[-1], 4):
            group = moved[..., start : start + 4]
            kept = np.count_nonzero(group, axis=-1)
            np.testing.assert_array_equal(kept, min(group.shape[-1], 2))
            groups += kept.size
        zeros += value.size - np.count_nonzero(value)
        size += value.size
    # Zeros: stem 0 of 72, depthwise 24 of 72, pointwise 64 of 128, logits
    # 80 of 160.
    assert (zeros, size) == (168, 432)
    assert result["sparsity"] == pytest.approx(168 / 432)
    assert (result["groups"], result["conforming"]) == (groups, groups)


def test_m_by_n_groups_counts_violations_and_partial_groups():
    kernel = np.array(
        [
            [1.0, 2.0, 0.0, 0.0, 5.0, 6.0, 7.0],
            [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 7.0],
        ]
    )
    # Along axis 1: groups [1,2,0,0] ok, [5,6,7] not, [1,2,3,0] not, [0,0,7] ok.
    assert mobilenet_mnist.m_by_n_groups(kernel, 1) == (4, 2)
    # Along axis 0, each column is one partial group of 2: all conform.
    assert mobilenet_mnist.m_by_n_groups(kernel, 0) == (7, 7)
    # 1:2 along axis 1: [1,2] [1,2] and [5,6] have 2 non-zeros, 5 conform.
    assert mobilenet_mnist.m_by_n_groups(kernel, 1, (1, 2)) == (8, 5)


def test_lstm_pruned_copy_keeps_exactly_a_fifth_of_every_kernel(lstm_results):
    dense, sparse = lstm_results["dense"], lstm_results["80% sparse"]
    counts = lstm_shakespeare.kernel_counts(sparse["model"])
    assert list(counts) == [
        "embedding/embeddings",
        "lstm/lstm_cell/kernel",
        "lstm/lstm_cell/recurrent_kernel",
        "logits/kernel",
    ]
    for path, (size, nonzeros) in counts.items():
        assert nonzeros == expected_nonzeros(size, 0.8), path
    size = sum(size for size, _ in counts.values())
    kept = sum(nonzeros for _, nonzeros in counts.values())
    assert sparse["sparsity"] == pytest.approx(1 - kept / size)
    assert dense["sparsity"] == 0.0
    layers = sparse["model"].layers
    assert not any(isinstance(layer, PruneLowMagnitude) for layer in layers)
    for result in (dense, sparse):
        assert 0.0 <= result["accuracy"] <= 1.0
        assert 1.0 < result["perplexity"] < 1e6


def test_lstm_evaluate_scores_uniform_logits_exactly():
    model = lstm_shakespeare.build_char_lstm(keras, 5, 4, 3)
    logits = model.get_layer("logits")
    logits.set_weights([np.zeros_like(w) for w in logits.get_weights()])
    x = np.array([[1, 2, 3], [4, 0, 1]], dtype="int32")
    y = np.array([[0, 2, 0], [0, 1, 4]], dtype="int32")
    accuracy, perplexity = lstm_shakespeare.evaluate(model, x, y)
    # All logits equal: argmax is 0, every character has probability 1/5.
    assert accuracy == pytest.approx(3 / 6)
    assert perplexity == pytest.approx(5.0)
