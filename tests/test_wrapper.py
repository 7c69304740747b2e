import warnings

import keras
import numpy as np
import pytest
from conftest import Bilinear
from conftest import CheckEveryBatch
from conftest import assert_exact_sparsity
from conftest import build_simple_dense_model
from conftest import compile_model
from conftest import expected_nonzeros
from conftest import pruned_pairs
from conftest import to_numpy
from conftest import toy_data

import keras_sparsity as sparsity
from keras_sparsity import PruneLowMagnitude

L = keras.layers
EVERY_STEP = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)

# (layer factory, input shape, number of pruned weights)
LAYERS = [
    (lambda: L.Dense(8), (6,), 1),
    (lambda: L.Conv1D(4, 3), (10, 3), 1),
    (lambda: L.Conv2D(4, 3), (8, 8, 3), 1),
    (lambda: L.Conv3D(4, 3), (5, 5, 5, 2), 1),
    (lambda: L.Conv2DTranspose(4, 3), (6, 6, 3), 1),
    (lambda: L.Conv3DTranspose(4, 3), (4, 4, 4, 2), 1),
    (lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 3), 1),
    (lambda: L.SeparableConv1D(4, 3), (10, 3), 2),
    (lambda: L.SeparableConv2D(4, 3), (8, 8, 3), 2),
]


SEQUENCE_LAYERS = [
    (lambda: L.LSTM(4), (3, 5), 2),
    (lambda: L.GRU(4, return_sequences=True), (3, 5), 2),
    (lambda: L.SimpleRNN(4), (3, 5), 2),
    (lambda: L.RNN([L.LSTMCell(4), L.GRUCell(3)]), (3, 5), 4),
    (lambda: L.Bidirectional(L.LSTM(4)), (3, 5), 4),
    (lambda: L.TimeDistributed(L.Dense(4)), (3, 5), 1),
    (lambda: L.EinsumDense("abc,cd->abd", output_shape=(3, 4)), (3, 5), 1),
    (lambda: L.ConvLSTM1D(2, 3), (2, 6, 3), 2),
]


def one_layer_model(layer, input_shape, schedule=EVERY_STEP, **kwargs):
    inputs = keras.Input(input_shape)
    x = sparsity.prune_low_magnitude(
        layer, pruning_schedule=schedule, **kwargs
    )(inputs)
    x = L.Flatten()(x)
    outputs = L.Dense(5)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "make_layer, input_shape, num_pruned", LAYERS + SEQUENCE_LAYERS
)
def test_every_supported_layer_reaches_exact_sparsity_after_fit(
    make_layer, input_shape, num_pruned
):
    model = compile_model(one_layer_model(make_layer(), input_shape))
    wrapper = model.layers[1]
    assert len(wrapper.masks) == num_pruned
    x, y = toy_data(input_shape, num_samples=16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert_exact_sparsity(model, 0.5)


def test_multi_head_attention_is_pruned():
    inputs = keras.Input((6, 10))
    attention = sparsity.prune_low_magnitude(
        L.MultiHeadAttention(2, 8), pruning_schedule=EVERY_STEP
    )
    x = attention(inputs, inputs)
    model = compile_model(keras.Model(inputs, L.Dense(5)(L.Flatten()(x))))
    assert len(attention.masks) == 4
    model.fit(*toy_data((6, 10), num_samples=16), batch_size=8, verbose=0)
    assert_exact_sparsity(model, 0.5)


PATTERN_LAYERS = [
    (lambda: L.Dense(8), (16,)),
    (lambda: L.Conv2D(4, 3), (6, 6, 8)),
    (lambda: L.Conv2DTranspose(4, 3), (5, 5, 8)),
    (lambda: L.DepthwiseConv2D(2), (5, 5, 8)),
    (lambda: L.EinsumDense("ab,bc->ac", output_shape=8), (16,)),
    (lambda: L.LSTM(4), (3, 8)),
]


def canonical_weights(wrapper):
    """Each pruned weight and mask read as (reduction..., output)."""
    out = []
    for pruned, mask in zip(wrapper._pruned, wrapper.masks):
        perm = pruned.permutation
        num = len(pruned.reduction_axes)
        for array in (to_numpy(pruned.variable), to_numpy(mask)):
            moved = np.transpose(array, perm)
            out.append(moved.reshape(moved.shape[:num] + (-1,)))
    return list(zip(out[::2], out[1::2]))


@pytest.mark.parametrize("make_layer, input_shape", PATTERN_LAYERS)
def test_two_by_four_holds_in_every_group_after_training(
    make_layer, input_shape
):
    layer = make_layer()
    model = compile_model(
        one_layer_model(layer, input_shape, sparsity_m_by_n=(2, 4))
    )
    model.fit(*toy_data(input_shape, num_samples=16), batch_size=8, verbose=0)
    for weight, mask in canonical_weights(model.layers[1]):
        groups = mask.reshape(-1, mask.shape[-2], mask.shape[-1])
        size = groups.shape[1]
        for start in range(0, size - size % 4, 4):
            kept = groups[:, start : start + 4, :].sum(axis=1)
            np.testing.assert_array_equal(kept, 2.0)
        assert np.all(weight[mask == 0] == 0)


def test_n_by_m_ramps_up_with_the_schedule():
    schedule = sparsity.PolynomialDecay(0.0, 0.5, 0, 4, power=1, frequency=1)
    model = compile_model(
        one_layer_model(L.Dense(8), (16,), schedule, sparsity_m_by_n=(2, 4))
    )
    x, y = toy_data((16,), num_samples=40)
    model.fit(x[:24], y[:24], batch_size=8, verbose=0)  # steps 0, 1, 2
    mask = to_numpy(model.layers[1].masks[0]).reshape(4, 4, 8)
    per_group = mask.sum(axis=1)
    # Step 2 targets 0.25 sparsity: half of the 32 groups are 2:4.
    assert sorted(np.unique(per_group)) == [2.0, 4.0]
    assert int((per_group == 2).sum()) == 16
    model.fit(x[24:], y[24:], batch_size=8, verbose=0)  # steps 3, 4
    per_group = to_numpy(model.layers[1].masks[0]).reshape(4, 4, 8).sum(1)
    np.testing.assert_array_equal(per_group, 2.0)


@pytest.mark.parametrize("make_layer, input_shape", PATTERN_LAYERS)
def test_blocks_are_pruned_whole_after_training(make_layer, input_shape):
    layer = make_layer()
    model = compile_model(
        one_layer_model(
            layer, input_shape, block_size=(2, 2), block_pooling_type="MAX"
        )
    )
    model.fit(*toy_data(input_shape, num_samples=16), batch_size=8, verbose=0)
    for weight, mask in canonical_weights(model.layers[1]):
        matrix = mask.reshape(-1, mask.shape[-1])
        rows, cols = matrix.shape
        for r in range(0, rows, 2):
            for c in range(0, cols, 2):
                block = matrix[r : r + 2, c : c + 2]
                assert block.min() == block.max()
        blocks = -(-rows // 2) * -(-cols // 2)
        kept_blocks = expected_nonzeros(blocks, 0.5)
        assert (
            sum(
                matrix[r, c]
                for r in range(0, rows, 2)
                for c in range(0, cols, 2)
            )
            == kept_blocks
        )
        assert np.all(weight[mask == 0] == 0)


def test_pattern_that_does_not_fit_fails_before_training():
    pattern = r"Layer .dense.*kernel.*\(8, 4\).*block_size.*\(9, 1\)"
    with pytest.raises(ValueError, match=pattern):
        one_layer_model(L.Dense(4), (8,), block_size=(9, 1))


def test_embedding_is_pruned():
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="int32"),
            sparsity.prune_low_magnitude(
                L.Embedding(10, 3), pruning_schedule=EVERY_STEP
            ),
            L.Flatten(),
            L.Dense(5),
        ]
    )
    compile_model(model)
    x = np.random.RandomState(0).randint(0, 10, (16, 4))
    y = np.random.RandomState(1).randint(0, 5, 16)
    model.fit(x, y, batch_size=8, verbose=0)
    assert_exact_sparsity(model, 0.5)


@pytest.mark.parametrize(
    "compile_kwargs",
    [{}, {"jit_compile": False}, {"run_eagerly": True}],
    ids=["default", "no_jit", "eager"],
)
def test_pruned_weights_are_zero_after_every_batch(compile_kwargs):
    schedule = sparsity.PolynomialDecay(0.3, 0.9, 0, 6, frequency=2)
    model = sparsity.prune_low_magnitude(
        build_simple_dense_model(), pruning_schedule=schedule
    )
    compile_model(model, **compile_kwargs)
    check = CheckEveryBatch()
    x, y = toy_data(num_samples=64)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[check])
    assert check.checked == 8
    assert_exact_sparsity(model, 0.9)


def test_masks_follow_the_schedule_step_by_step():
    # TFMOT's conditional-update case: sparsity from a table, every step.
    table = [0.0, 0.1, 0.1, 0.3, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5]

    @keras.saving.register_keras_serializable(package="tests")
    class Table(sparsity.PruningSchedule):
        def __call__(self, step):
            value = keras.ops.take(
                keras.ops.convert_to_tensor(table, "float32"),
                keras.ops.minimum(step, len(table) - 1),
            )
            return keras.ops.greater_equal(step, 0), value

        def get_config(self):
            return {}

    model = keras.Sequential(
        [
            keras.Input((10,)),
            sparsity.prune_low_magnitude(L.Dense(10), pruning_schedule=Table()),
            L.Dense(5),
        ]
    )
    compile_model(model, optimizer=keras.optimizers.SGD(0.1))
    x, y = toy_data(num_samples=len(table))
    counts = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if keras.backend.backend() == "jax":
                self.model.jax_state_sync()
            counts.append(int(np.count_nonzero(pruned_pairs(model)[0][1])))

    model.fit(x, y, batch_size=1, shuffle=False, verbose=0, callbacks=[Count()])
    assert counts == [100, 90, 90, 70, 70, 50, 50, 50, 50, 50]


def test_default_frequency_prunes_with_few_batches():
    # TFMOT's per-layer counter starts at 1: frequency=100 and 3 batches
    # never prune there (issues #973, #975). Step 0 is a pruning step here.
    model = sparsity.prune_low_magnitude(
        build_simple_dense_model(),
        pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0),
    )
    compile_model(model)
    x, y = toy_data(num_samples=24)
    model.fit(x, y, batch_size=8, verbose=0)
    assert_exact_sparsity(model, 0.5)


def test_shared_layer_counts_one_step_per_batch():
    schedule = sparsity.ConstantSparsity(0.5, begin_step=2, frequency=100)
    shared = sparsity.prune_low_magnitude(L.Dense(8), pruning_schedule=schedule)
    a, b = keras.Input((10,)), keras.Input((10,))
    merged = L.Concatenate()([shared(a), shared(b)])
    model = compile_model(keras.Model([a, b], L.Dense(5)(merged)))
    x, y = toy_data(num_samples=16)
    model.fit([x, x], y, batch_size=8, epochs=1, verbose=0)  # steps 0, 1
    assert np.count_nonzero(pruned_pairs(model)[0][1]) == 80
    model.fit([x[:8], x[:8]], y[:8], batch_size=8, verbose=0)  # step 2
    assert_exact_sparsity(model, 0.5)
    mask = pruned_pairs(model)[0][2]
    assert set(np.unique(mask)) == {0.0, 1.0}


def test_zero_sparsity_trains_exactly_like_the_dense_model():
    dense = build_simple_dense_model()
    pruned = sparsity.prune_low_magnitude(
        dense, pruning_schedule=sparsity.ConstantSparsity(0.0, 0, frequency=1)
    )
    compile_model(dense)
    compile_model(pruned)
    x, y = toy_data(num_samples=32)
    dense.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    pruned.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    final = sparsity.strip_pruning(pruned)
    for a, b in zip(dense.get_weights(), final.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_extreme_sparsity_keeps_exactly_one_weight():
    model = sparsity.prune_low_magnitude(
        build_simple_dense_model(),
        pruning_schedule=sparsity.ConstantSparsity(0.99, 0, frequency=1),
    )
    compile_model(model)
    x, y = toy_data(num_samples=8)
    model.fit(x, y, batch_size=8, verbose=0)
    assert [int(np.count_nonzero(w)) for _, w, _ in pruned_pairs(model)] == [
        1,
        1,
    ]


def test_gradient_accumulation_counts_updates_not_batches():
    # Two batches make one update; step 1 (pruning) is batches 3 and 4.
    schedule = sparsity.ConstantSparsity(0.5, begin_step=1, end_step=1)
    model = sparsity.prune_low_magnitude(
        build_simple_dense_model(), pruning_schedule=schedule
    )
    compile_model(
        model, optimizer=keras.optimizers.Adam(gradient_accumulation_steps=2)
    )
    x, y = toy_data(num_samples=32)
    model.fit(x[:16], y[:16], batch_size=8, verbose=0)
    assert int(np.count_nonzero(pruned_pairs(model)[0][2] == 0)) == 0
    model.fit(x[16:], y[16:], batch_size=8, verbose=0)
    assert int(to_numpy(model.optimizer.iterations)) == 2
    assert_exact_sparsity(model, 0.5)


def test_weights_that_come_back_restart_at_zero():
    # Sparsity falls from 0.8 to 0.5 at step 1: the 30 weights let back in
    # are exactly zero after that step and train from the next one on.
    @keras.saving.register_keras_serializable(package="tests")
    class Falling(sparsity.PruningSchedule):
        def __call__(self, step):
            value = keras.ops.where(keras.ops.equal(step, 0), 0.8, 0.5)
            return keras.ops.less(step, 2), keras.ops.cast(value, "float32")

        def get_config(self):
            return {}

    model = keras.Sequential(
        [
            keras.Input((10,)),
            sparsity.prune_low_magnitude(
                L.Dense(10), pruning_schedule=Falling()
            ),
            L.Dense(5),
        ]
    )
    compile_model(model, optimizer=keras.optimizers.SGD(0.1))
    x, y = toy_data(num_samples=3)
    nonzeros, kept = [], []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if keras.backend.backend() == "jax":
                self.model.jax_state_sync()
            _, kernel, mask = pruned_pairs(model)[0]
            nonzeros.append(int(np.count_nonzero(kernel)))
            kept.append(int(np.count_nonzero(mask)))

    model.fit(x, y, batch_size=1, shuffle=False, verbose=0, callbacks=[Count()])
    assert kept == [20, 50, 50]
    assert nonzeros == [20, 20, 50]


def test_wrapper_names_and_masks():
    wrapper = PruneLowMagnitude(L.Dense(3, name="dense_a"))
    assert wrapper.name == "prune_low_magnitude_dense_a"
    assert PruneLowMagnitude(L.Dense(3), name="mine").name == "mine"
    wrapper.build((None, 4))
    assert [m.shape for m in wrapper.masks] == [(4, 3)]
    assert wrapper.pruned_weights[0] is wrapper.layer.kernel
    np.testing.assert_array_equal(to_numpy(wrapper.masks[0]), 1.0)


def test_subclass_of_dense_and_prunable_layer_are_accepted():
    class MyDense(L.Dense):
        pass

    class PrunedBias(L.Dense, sparsity.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel, self.bias]

    assert len(_built(PruneLowMagnitude(MyDense(3))).masks) == 1
    assert len(_built(PruneLowMagnitude(PrunedBias(3))).masks) == 2


def test_layer_without_kernel_is_wrapped_with_no_masks():
    wrapper = _built(PruneLowMagnitude(L.Dropout(0.5)))
    assert wrapper.masks == []


def _built(wrapper):
    wrapper.build((None, 4))
    return wrapper


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(block_pooling_type="MIN"), ValueError, "Unsupported pooling"),
        (dict(block_size=(1, 2, 3)), ValueError, "block_size"),
        (dict(block_size=(0, 1)), ValueError, "block_size"),
        (dict(block_size=(1.0, 2)), ValueError, "block_size"),
        (dict(sparsity_m_by_n=(2.0, 4)), ValueError, "sparsity_m_by_n"),
        (dict(sparsity_m_by_n="ab"), ValueError, "sparsity_m_by_n"),
        (dict(sparsity_m_by_n=(4, 4)), ValueError, "0 < m < n"),
        (
            dict(sparsity_m_by_n=(2, 4), block_size=(1, 4)),
            ValueError,
            "cannot be combined",
        ),
        (dict(pruning_schedule=0.5), TypeError, "pruning_schedule"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        PruneLowMagnitude(L.Dense(3), **kwargs)


def test_bad_layers_are_rejected():
    with pytest.raises(ValueError, match="already pruned"):
        PruneLowMagnitude(PruneLowMagnitude(L.Dense(3)))
    with pytest.raises(ValueError, match="keras.layers.Layer"):
        PruneLowMagnitude("dense")
    with pytest.raises(ValueError, match="Bilinear is not supported"):
        PruneLowMagnitude(Bilinear())
    with pytest.raises(ValueError, match="PrunableLayer"):
        PruneLowMagnitude(Bilinear())


def test_constraint_outside_an_optimizer_step_is_an_error():
    wrapper = _built(PruneLowMagnitude(L.Dense(3)))
    kernel = wrapper.layer.kernel
    with pytest.raises(RuntimeError, match="optimizer"):
        kernel.constraint(kernel)


def test_user_constraint_still_applies():
    layer = L.Dense(8, kernel_constraint=keras.constraints.NonNeg())
    model = keras.Sequential(
        [
            keras.Input((10,)),
            sparsity.prune_low_magnitude(layer, pruning_schedule=EVERY_STEP),
            L.Dense(5),
        ]
    )
    compile_model(model, optimizer=keras.optimizers.SGD(1.0))
    x, y = toy_data(num_samples=16)
    model.fit(x, y, batch_size=8, verbose=0)
    kernel = to_numpy(layer.kernel)
    assert kernel.min() >= 0.0
    assert_exact_sparsity(model, 0.5)


def test_config_round_trip_keeps_every_argument():
    wrapper = PruneLowMagnitude(
        L.Dense(3),
        pruning_schedule=sparsity.PolynomialDecay(0.1, 0.7, 2, 20),
        block_size=(1, 2),
        block_pooling_type="MAX",
        name="w",
    )
    restored = PruneLowMagnitude.from_config(wrapper.get_config())
    assert restored.pruning_schedule == wrapper.pruning_schedule
    assert restored.block_size == (1, 2)
    assert restored.block_pooling_type == "MAX"
    assert restored.name == "w"
    nm = PruneLowMagnitude(L.Dense(3), sparsity_m_by_n=(2, 4))
    assert PruneLowMagnitude.from_config(nm.get_config()).sparsity_m_by_n == (
        2,
        4,
    )


# (layer factory, input maker): each layer is fed a Keras mask, from
# Embedding(mask_zero=True) itself or from a Masking layer before it.
TOKENS = np.array([[3, 4, 0, 0, 0], [1, 2, 3, 0, 5]], dtype="int32")
STEPS = np.array(
    [[[1, 2, 3], [4, 5, 6], [0, 0, 0]], [[0, 0, 0], [1, 1, 1], [2, 0, 1]]],
    dtype="float32",
)
MASKED_LAYERS = {
    "embedding": (lambda: L.Embedding(20, 8, mask_zero=True), TOKENS),
    "dense": (lambda: L.Dense(8), STEPS),
    "lstm_sequences": (lambda: L.LSTM(4, return_sequences=True), STEPS),
    "lstm_last": (lambda: L.LSTM(4), STEPS),
    "bidirectional": (
        lambda: L.Bidirectional(L.LSTM(4, return_sequences=True)),
        STEPS,
    ),
}


def _keras_mask(x):
    from keras.src.backend.common.masking import get_keras_mask

    mask = get_keras_mask(x)
    return None if mask is None else to_numpy(mask)


def _masked(x):
    """`x` as a tensor, with a Keras mask attached unless it is the tokens."""
    if x.dtype == np.int32:
        return keras.ops.convert_to_tensor(x)
    return L.Masking(0.0)(keras.ops.convert_to_tensor(x))


@pytest.mark.parametrize("kind", sorted(MASKED_LAYERS))
def test_wrapper_passes_the_keras_mask_through_like_the_wrapped_layer(kind):
    make_layer, x = MASKED_LAYERS[kind]
    layer = make_layer()
    expected_output = layer(_masked(x))
    expected_mask = _keras_mask(expected_output)
    symbolic_input = keras.Input(x.shape[1:], dtype=str(x.dtype))
    masked_input = (
        symbolic_input
        if kind == "embedding"
        else L.Masking(0.0)(symbolic_input)
    )
    expected_symbolic = getattr(layer(masked_input), "_keras_mask", None)
    wrapper = PruneLowMagnitude(layer)  # The same layer: same weights.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = wrapper(_masked(x))
        symbolic = getattr(wrapper(masked_input), "_keras_mask", None)
    destroyed = [w for w in caught if "destroy the mask" in str(w.message)]
    assert not destroyed, [str(w.message) for w in destroyed]
    np.testing.assert_array_equal(to_numpy(output), to_numpy(expected_output))
    if kind == "lstm_last":
        assert expected_mask is None
    else:
        assert expected_mask is not None
    if expected_mask is None:
        assert _keras_mask(output) is None
        assert symbolic is None and expected_symbolic is None
    else:
        np.testing.assert_array_equal(_keras_mask(output), expected_mask)
        assert symbolic.shape == expected_symbolic.shape
        assert symbolic.dtype == expected_symbolic.dtype


def test_wrapped_model_averages_over_unmasked_steps_only():
    # Embedding(mask_zero) -> Dense -> GlobalAveragePooling1D: a lost mask
    # would average the padding too.
    embedding = L.Embedding(20, 8, mask_zero=True)
    dense = L.Dense(4)

    def build(wrap):
        tokens = keras.Input((5,), dtype="int32")
        first, second = embedding, dense
        if wrap:  # The same layers, so the same weights.
            first, second = PruneLowMagnitude(first), PruneLowMagnitude(second)
        return keras.Model(
            tokens, L.GlobalAveragePooling1D()(second(first(tokens)))
        )

    plain = to_numpy(build(False)(TOKENS))
    values = to_numpy(dense(embedding(keras.ops.convert_to_tensor(TOKENS))))
    kept = TOKENS != 0
    average = (values * kept[..., None]).sum(1) / kept.sum(1, keepdims=True)
    np.testing.assert_allclose(plain, average, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(build(True)(TOKENS)), plain)
