import json

import keras
import numpy as np
import pytest
from conftest import compile_model
from conftest import expected_nonzeros
from conftest import to_numpy
from conftest import toy_data

import keras_sparsity as sparsity
from keras_sparsity import runtimes
from keras_sparsity.compressed import information_bound_bytes
from keras_sparsity.report import density_maps
from keras_sparsity.report import report

L = keras.layers
# Tests set kernels by hand; zeros skip compiling random initializers.
ZEROS = {"kernel_initializer": "zeros"}


def nonzero_values(shape, seed=1):
    """Values in +-[0.5, 1.5): never zero."""
    rng = np.random.RandomState(seed)
    signs = rng.choice([-1.0, 1.0], shape)
    return (rng.uniform(0.5, 1.5, shape) * signs).astype("float32")


def masked_values(mask, seed=1):
    """Non-zero values where `mask` is 1, +0.0 elsewhere (never -0.0)."""
    return np.where(mask > 0, nonzero_values(mask.shape, seed), 0.0).astype(
        "float32"
    )


def random_mask(shape, num_kept, seed=0):
    rng = np.random.RandomState(seed)
    flat = np.zeros(int(np.prod(shape)), "float32")
    flat[rng.choice(flat.size, num_kept, replace=False)] = 1.0
    return flat.reshape(shape)


def block_mask(rows, cols, block, num_kept, seed=0):
    """A (rows, cols) 0/1 matrix of `block` tiles, `num_kept` tiles of ones."""
    grid = random_mask((rows // block[0], cols // block[1]), num_kept, seed)
    return np.kron(grid, np.ones(block, "float32"))


def n_of_m_mask(rows, cols, n, m, seed=0):
    """Keeps n random weights of every m consecutive rows, per column."""
    rng = np.random.RandomState(seed)
    mask = np.zeros((rows // m, m, cols), "float32")
    for group in range(rows // m):
        for col in range(cols):
            mask[group, rng.choice(m, n, replace=False), col] = 1.0
    return mask.reshape(rows, cols)


def single_layer_model(layer, input_shape, weights):
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights(weights)
    return model


def dense_model(mask, input_shape=None, dtype=None, seed=1):
    """A model around one Dense layer named "fc" whose kernel is `mask`
    times non-zero values; its bias is all ones."""
    rows, cols = mask.shape
    layer = L.Dense(cols, name="fc", dtype=dtype, **ZEROS)
    kernel = masked_values(mask, seed)
    return single_layer_model(
        layer, input_shape or (rows,), [kernel, np.ones(cols, "float32")]
    )


def only_row(model):
    (row,) = report(model, sizes=False).rows
    return row


def verdict(result, runtime, layer="fc", weight="kernel"):
    (found,) = [
        v
        for v in result.verdicts
        if (v.runtime, v.layer, v.weight) == (runtime, layer, weight)
    ]
    return found


def test_row_counts_exact_nonzeros():
    model = dense_model(random_mask((16, 8), 37))
    result = report(model, sizes=False)
    (row,) = result.rows
    assert (row.layer, row.weight, row.layer_type) == ("fc", "kernel", "Dense")
    assert (row.operation, row.dtype) == ("dense", "float32")
    assert row.shape == (16, 8)
    assert (row.num_parameters, row.num_nonzeros) == (128, 37)
    assert row.sparsity == 1 - 37 / 128
    assert row.pattern == "unstructured"
    # The bias (8 ones) counts in the model totals, not in the prunable ones.
    assert (result.num_parameters, result.num_nonzeros) == (136, 45)
    assert (result.prunable_parameters, result.prunable_nonzeros) == (128, 37)
    assert result.sparsity == 1 - 37 / 128
    assert result.sizes is None


def test_dense_kernel_is_dense():
    model = keras.Sequential([keras.Input((12,)), L.Dense(6)])
    row = only_row(model)
    assert (row.pattern, row.block, row.sparsity) == ("dense", None, 0.0)
    assert row.num_nonzeros == 72


@pytest.mark.parametrize("block", [(4, 1), (1, 4), (2, 2)])
def test_blocks_in_dense_kernels(block):
    # 160 blocks of 4 weights, 16 kept: exactly 90 %.
    row = only_row(dense_model(block_mask(40, 16, block, 16)))
    assert row.pattern == f"block {block[0]}x{block[1]}"
    assert row.block == block
    assert (row.num_nonzeros, row.sparsity) == (64, 0.9)


def test_blocks_are_read_in_the_canonical_layout():
    # Canonical rows of a Conv2D kernel (3, 3, in, out) run along `in`;
    # a Conv2DTranspose kernel (3, 3, out, in) is transposed first.
    canonical = block_mask(3 * 3 * 8, 16, (4, 1), 29)
    kernel = masked_values(canonical.reshape(3, 3, 8, 16))
    conv = L.Conv2D(16, 3, **ZEROS)
    model = single_layer_model(conv, (6, 6, 8), [kernel, np.zeros(16)])
    assert only_row(model).pattern == "block 4x1"
    transposed = kernel.transpose(0, 1, 3, 2)
    deconv = single_layer_model(
        L.Conv2DTranspose(16, 3, **ZEROS), (6, 6, 8), [transposed, np.zeros(16)]
    )
    row = only_row(deconv)
    assert (row.pattern, row.shape, row.num_nonzeros) == (
        "block 4x1",
        (3, 3, 16, 8),
        29 * 4,
    )
    # The same array as a Conv2D kernel holds blocks across its outputs.
    conv = L.Conv2D(8, 3, **ZEROS)
    row = only_row(
        single_layer_model(conv, (6, 6, 16), [transposed, np.zeros(8)])
    )
    assert row.pattern == "block 1x4"


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4)])
def test_n_of_m_along_the_input_axis(n, m):
    row = only_row(dense_model(n_of_m_mask(32, 16, n, m)))
    assert row.pattern == f"{n}:{m}"
    assert row.sparsity == 1 - n / m
    assert row.groups_over_2_of_4 == 0


def test_two_of_four_in_a_conv_kernel_runs_along_input_channels():
    mask = n_of_m_mask(3 * 3 * 8, 4, 2, 4).reshape(3, 3, 8, 4)
    kernel = masked_values(mask)
    conv = L.Conv2D(4, 3, **ZEROS)
    model = single_layer_model(conv, (5, 5, 8), [kernel, np.zeros(4)])
    assert only_row(model).pattern == "2:4"
    # Rolled by 2 along the input axis, groups of 4 straddle the old ones.
    rolled = np.roll(kernel, 2, axis=2)
    conv = L.Conv2D(4, 3, **ZEROS)
    model = single_layer_model(conv, (5, 5, 8), [rolled, np.zeros(4)])
    row = only_row(model)
    groups = (np.roll(mask, 2, axis=2) != 0).reshape(9, 2, 4, 4).sum(axis=2)
    assert row.groups_over_2_of_4 == int(np.sum(groups > 2)) > 0
    # Each 8 input channels still keep 4, rolled or not.
    assert row.pattern == "4:8"


def test_unstructured_half_counts_groups_over_two_of_four():
    mask = random_mask((32, 16), 256)
    row = only_row(dense_model(mask))
    over = int(np.sum(mask.reshape(8, 4, 16).sum(axis=1) > 2))
    assert row.groups_over_2_of_4 == over > 0
    assert row.pattern == "unstructured"


def test_macs_of_dense_on_a_sequence_and_of_conv2d():
    # Dense applied to 5 positions: every weight is used 5 times.
    row = only_row(dense_model(random_mask((16, 8), 40), input_shape=(5, 16)))
    assert (row.dense_macs, row.sparse_macs) == (16 * 8 * 5, 40 * 5)
    # Conv2D 3x3, stride 2, "same" on 10x10: 5x5 output positions.
    mask = random_mask((3, 3, 4, 8), 100)
    kernel = masked_values(mask)
    conv = L.Conv2D(8, 3, strides=2, padding="same", **ZEROS)
    row = only_row(single_layer_model(conv, (10, 10, 4), [kernel, np.zeros(8)]))
    assert (row.dense_macs, row.sparse_macs) == (288 * 25, 100 * 25)
    # "valid" on 10x10 with stride 1: 8x8 positions.
    conv = L.Conv2D(8, 3, **ZEROS)
    result = report(
        single_layer_model(conv, (10, 10, 4), [kernel, np.zeros(8)]),
        sizes=False,
    )
    assert (result.dense_macs, result.sparse_macs) == (288 * 64, 100 * 64)


def test_rows_of_depthwise_lstm_and_embedding_layers():
    inputs = keras.Input((7, 5))
    image = keras.Input((6, 6, 4))
    tokens = keras.Input((9,), dtype="int32")
    depthwise = L.DepthwiseConv2D(
        3, depth_multiplier=2, name="dw", depthwise_initializer="zeros"
    )
    lstm = L.LSTM(3, name="lstm", recurrent_initializer="zeros", **ZEROS)
    embedding = L.Embedding(20, 4, name="embed", embeddings_initializer="zeros")
    model = keras.Model(
        [inputs, image, tokens],
        [lstm(inputs), depthwise(image), embedding(tokens)],
    )
    rows = {(r.layer, r.weight): r for r in report(model, sizes=False).rows}
    assert list(rows) == [
        ("lstm", "kernel"),
        ("lstm", "recurrent_kernel"),
        ("dw", "kernel"),
        ("embed", "embeddings"),
    ]
    kernel = rows[("lstm", "kernel")]
    recurrent = rows[("lstm", "recurrent_kernel")]
    assert (kernel.shape, kernel.operation, kernel.dense_macs) == (
        (5, 12),
        "recurrent",
        60 * 7,
    )
    assert (recurrent.shape, recurrent.dense_macs) == ((3, 12), 36 * 7)
    dw = rows[("dw", "kernel")]
    # 4x4 output positions; reduction axes are the 3x3 window only.
    assert (dw.operation, dw.shape, dw.dense_macs) == (
        "depthwise",
        (3, 3, 4, 2),
        72 * 16,
    )
    assert (dw.num_outputs, dw.num_inputs) == (8, 0)
    embed = rows[("embed", "embeddings")]
    assert (embed.operation, embed.dense_macs, embed.num_outputs) == (
        "embedding",
        0,
        4,
    )


def test_unknown_sequence_length_leaves_macs_unknown():
    model = dense_model(random_mask((16, 8), 40), input_shape=(None, 16))
    result = report(model, sizes=False)
    assert (result.rows[0].dense_macs, result.dense_macs) == (None, 0)
    assert result.notes == (
        "MACs unknown (input shape not fixed) for: fc/kernel",
    )


def test_empty_channels_are_counted():
    mask = np.ones((3, 3, 4, 8), "float32")
    mask[..., [2, 5]] = 0.0  # two empty filters (outputs)
    mask[:, :, 1, :] = 0.0  # one empty input channel
    mask[0, 0, 0, 0] = 0.0  # a scattered zero changes no count
    kernel = masked_values(mask)
    conv = L.Conv2D(8, 3, **ZEROS)
    model = single_layer_model(conv, (5, 5, 4), [kernel, np.zeros(8)])
    result = report(model, sizes=False)
    (row,) = result.rows
    assert (row.empty_outputs, row.num_outputs) == (2, 8)
    assert (row.empty_inputs, row.num_inputs) == (1, 4)
    # Kernel by kernel (a model without a graph): 6 of 8 outputs times 3
    # of 4 inputs stay, 43.75 % smaller.
    faster, reason = runtimes._structural_alone(row)
    assert faster
    assert "2 of 8 outputs and 1 of 4 inputs are all zero" in reason
    assert "43.8 % smaller" in reason
    # Through the graph, as shrink sees it: the outputs are the model's and
    # its inputs the model's input, so nothing can be cut.
    shrink = verdict(result, "structural", layer=row.layer)
    assert not shrink.faster
    assert shrink.reason == (
        "2 of 8 outputs are all zero, but shrink keeps them: reaches a model "
        "output"
    )
    scattered = report(dense_model(random_mask((16, 8), 100)), sizes=False)
    assert not verdict(scattered, "structural").faster


def test_structural_verdict_agrees_with_the_shrink_plan():
    """A residual pair: `a`'s zero units are cut only where `b` has them
    zero too; `head` loses the matching input rows."""
    inputs = keras.Input((6,))
    a = L.Dense(8, name="a")(inputs)
    b = L.Dense(8, name="b")(inputs)
    x = L.Add()([a, b])
    outputs = L.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    for name, zero in (("a", [1, 2, 5]), ("b", [2, 5, 7])):
        kernel, bias = model.get_layer(name).get_weights()
        kernel[:, zero] = 0.0
        bias[zero] = 0.0
        model.get_layer(name).set_weights([kernel, bias])
    result = report(model, sizes=False)
    plan = sparsity.shrink(model, plan_only=True)
    (group,) = [g for g in plan.groups if "a" in g.producers]
    assert group.removed == (2, 5)
    for name in ("a", "b"):
        found = verdict(result, "structural", layer=name)
        assert found.faster
        assert "shrink removes 2 of 8 outputs" in found.reason
    head = verdict(result, "structural", layer="head")
    assert head.faster and "2 input channels" in head.reason
    assert "outputs" not in head.reason.split("shrink removes")[1][:20]


def test_litert_verdicts_follow_tflite_blocks_and_densify():
    # TFLite's 1x4 block is 4 consecutive inputs of one output: (4, 1) here.
    fast = report(dense_model(block_mask(40, 16, (4, 1), 16)), sizes=False)
    litert = verdict(fast, "litert")
    assert litert.faster and "1×4 blocks" in litert.reason
    assert verdict(fast, "cpu_sparse").faster
    slow = report(dense_model(random_mask((40, 16), 128)), sizes=False)
    litert = verdict(slow, "litert")
    assert not litert.faster
    assert "1×4 blocks" in litert.reason
    assert "found unstructured 80 %" in litert.reason
    assert "DENSIFY" in litert.reason
    cpu = verdict(slow, "cpu_sparse")
    assert not cpu.faster and "break-even" in cpu.reason
    # 1x4 blocks are kept sparse from about 30 %, and pay from about 90 %.
    for num_kept, reason in ((32, "break-even"), (128, "from about 30 %")):
        mask = block_mask(40, 16, (4, 1), num_kept)
        litert = verdict(report(dense_model(mask), sizes=False), "litert")
        assert not litert.faster and reason in litert.reason
    # Blocks across outputs are densified by the converter.
    across = report(dense_model(block_mask(40, 16, (1, 4), 16)), sizes=False)
    assert "found block 1x4 90 %" in verdict(across, "litert").reason
    assert not verdict(across, "litert").faster
    # From 98 % random zeros the converter keeps the kernel sparse.
    rare = report(dense_model(random_mask((50, 20), 20)), sizes=False)
    assert verdict(rare, "litert").faster


@pytest.mark.parametrize("dtype", ["float16", "mixed_float16", "bfloat16"])
def test_nvidia_two_of_four_in_half_precision(dtype):
    result = report(dense_model(n_of_m_mask(32, 16, 2, 4), dtype=dtype))
    nvidia = verdict(result, "nvidia_2_4")
    compute = "bfloat16" if dtype == "bfloat16" else "float16"
    assert result.rows[0].dtype == compute
    assert nvidia.faster and f"2:4 along the input axis in {compute}" in (
        nvidia.reason
    )
    cpu = verdict(result, "cpu_sparse")
    assert not cpu.faster and "N:M" in cpu.reason


def test_nvidia_verdicts_say_what_is_missing():
    float32 = report(dense_model(n_of_m_mask(32, 16, 2, 4)), sizes=False)
    nvidia = verdict(float32, "nvidia_2_4")
    assert not nvidia.faster and "at least 32×32" in nvidia.reason
    wide = report(dense_model(n_of_m_mask(32, 32, 2, 4)), sizes=False)
    assert "TF32" in verdict(wide, "nvidia_2_4").reason
    unstructured = report(dense_model(random_mask((32, 16), 256)), sizes=False)
    nvidia = verdict(unstructured, "nvidia_2_4")
    over = unstructured.rows[0].groups_over_2_of_4
    assert not nvidia.faster
    assert f"{over} of 128 groups of 4" in nvidia.reason
    assert "sparsity_m_by_n=(2, 4)" in nvidia.reason


def mobilenet_like(
    pointwise_kept, stem_strides=2, head=L.GlobalAveragePooling2D
):
    """Stem, depthwise, a 1x1 Conv2D "pw" with `pointwise_kept` of its 128
    weights non-zero, then `head` and a classifier."""
    inputs = keras.Input((16, 16, 3))
    stem = L.Conv2D(
        8, 3, strides=stem_strides, padding="valid", name="stem", **ZEROS
    )
    x = stem(L.ZeroPadding2D(1)(inputs))
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", depthwise_initializer="zeros")(x)
    pointwise = L.Conv2D(16, 1, name="pw", **ZEROS)
    x = pointwise(x)
    x = head()(x)
    model = keras.Model(inputs, L.Dense(4, **ZEROS)(x))
    mask = random_mask((1, 1, 8, 16), pointwise_kept)
    pointwise.set_weights([masked_values(mask), np.zeros(16)])
    return model


def test_xnnpack_sparse_subgraph_rule():
    sparse = report(mobilenet_like(32), sizes=False)  # 75 % zeros
    litert = verdict(sparse, "litert", layer="pw")
    assert litert.faster
    assert "75 % zero" in litert.reason and "ARM only" in litert.reason
    assert not verdict(sparse, "litert", layer="stem").faster
    half = verdict(report(mobilenet_like(64), sizes=False), "litert", "pw")
    assert not half.faster and ">= 2/3" in half.reason
    no_mean = report(mobilenet_like(32, head=L.Flatten), sizes=False)
    reason = verdict(no_mean, "litert", layer="pw").reason
    assert "flatten" in reason or "GlobalAveragePooling2D" in reason
    assert not verdict(no_mean, "litert", layer="pw").faster
    stride_one = report(mobilenet_like(32, stem_strides=1), sizes=False)
    reason = verdict(stride_one, "litert", layer="pw").reason
    assert "ZeroPadding2D(1) then Conv2D(filters, 3, strides=2" in reason


def test_xnnpack_verdict_agrees_with_the_xnnpack_policy():
    """MobileNet v1's strided block: the policy prunes both 1x1 kernels,
    and the report calls exactly those faster (one rule set)."""
    inputs = keras.Input((16, 16, 3))
    x = L.ZeroPadding2D(1)(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="valid")(x)
    x = L.Conv2D(32, 1, name="pw1")(x)
    x = L.ZeroPadding2D(1)(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="valid")(x)
    x = L.Conv2D(32, 1, name="pw2")(x)
    model = keras.Model(inputs, L.GlobalAveragePooling2D(keepdims=True)(x))
    pruned = sparsity.prune_low_magnitude(
        model,
        sparsity.ConstantSparsity(0.8, 0),
        pruning_policy=sparsity.PruneForLatencyOnXNNPack(),
    )
    wrapped = sorted(
        w.layer.name for w in sparsity.walk.pruning_wrappers(pruned)
    )
    assert wrapped == ["pw1", "pw2"]
    for layer in model.layers:
        if layer.name in wrapped:
            kernel = layer.get_weights()[0]
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0
            layer.set_weights([kernel, layer.get_weights()[1]])
    result = report(model, sizes=False)
    faster = sorted(
        v.layer for v in result.verdicts if v.runtime == "litert" and v.faster
    )
    assert faster == wrapped


def test_report_of_a_pruned_model_after_fit_is_exact_and_read_only():
    schedule = sparsity.ConstantSparsity
    model = keras.Sequential(
        [
            keras.Input((64,)),
            sparsity.prune_low_magnitude(
                L.Dense(32, name="blocks"),
                schedule(0.9, 0),
                block_size=(4, 1),
            ),
            sparsity.prune_low_magnitude(
                L.Dense(16, name="two_four"),
                schedule(0.5, 0),
                sparsity_m_by_n=(2, 4),
            ),
            sparsity.prune_low_magnitude(
                L.Dense(10, name="plain"), schedule(0.8, 0)
            ),
        ]
    )
    compile_model(model)
    x, y = toy_data((64,), num_samples=32, num_classes=10)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before = [to_numpy(v).copy() for v in model.weights]
    result = report(model)
    for variable, array in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(variable), array)
    rows = {row.layer: row for row in result.rows}
    assert list(rows) == ["blocks", "two_four", "plain"]
    # 512 blocks of 4 weights, round(512 * 0.1) = 51 kept.
    assert (rows["blocks"].pattern, rows["blocks"].num_nonzeros) == (
        "block 4x1",
        51 * 4,
    )
    assert (rows["two_four"].pattern, rows["two_four"].sparsity) == ("2:4", 0.5)
    assert rows["plain"].num_nonzeros == expected_nonzeros(160, 0.8)
    assert verdict(result, "litert", layer="blocks").faster
    # The same report as the stripped model's, masks excluded from totals.
    stripped = report(sparsity.strip_pruning(model))
    assert stripped.rows == result.rows
    assert stripped.verdicts == result.verdicts
    assert (stripped.num_parameters, stripped.num_nonzeros) == (
        result.num_parameters,
        result.num_nonzeros,
    )
    assert result.num_parameters == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10


def test_wrappers_are_read_through_their_masks():
    # Before any optimizer step the kernel is dense; the mask decides.
    model = sparsity.prune_low_magnitude(
        keras.Sequential([keras.Input((12,)), L.Dense(8, name="fc")])
    )
    (wrapper,) = model.layers
    wrapper.masks[0].assign(random_mask((12, 8), 30))
    result = report(model, sizes=False)
    assert result.rows[0].num_nonzeros == 30
    stripped = sparsity.strip_pruning(model)
    assert result.rows == report(stripped, sizes=False).rows
    assert np.count_nonzero(to_numpy(wrapper.pruned_weights[0])) == 96


def test_sizes_match_compressed_saving(tmp_path):
    model = keras.Sequential(
        [keras.Input((96,)), L.Dense(64, name="a"), L.Dense(10, name="b")]
    )
    for layer in model.layers:
        kernel = layer.get_weights()[0]
        mask = random_mask(kernel.shape, kernel.size // 5)
        # np.where, not kernel * mask: each -0.0 would add a sign bit.
        kernel = np.where(mask > 0, kernel, 0.0)
        layer.set_weights([kernel, layer.get_weights()[1]])
    sizes = report(model).sizes
    info = sparsity.save_compressed(model, tmp_path / "m.sparse")
    assert sizes.compressed_bytes == info["compressed_bytes"]
    assert sizes.information_bound_bytes == information_bound_bytes(model)
    assert sizes.dense_keras_bytes > sizes.zipped_bytes
    assert sizes.zipped_bytes > sizes.compressed_bytes
    assert sizes.compressed_bytes > sizes.information_bound_bytes


class TwoDense(keras.Model):
    """Not registered as serializable: Keras cannot load it back."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = L.Dense(4)
        self.second = L.Dense(2)

    def call(self, x):
        return self.second(self.first(x))


def test_subclassed_model_without_sizes_gets_a_note():
    model = TwoDense()
    model(np.zeros((2, 3), "float32"))
    result = report(model)
    assert [row.dense_macs for row in result.rows] == [12, 8]
    assert result.sizes is None
    assert result.notes[0].startswith("Sizes not measured")
    # XNNPack's rule needs the graph; the other verdicts do not.
    assert len(result.verdicts) == 8


def test_to_dict_is_plain_json():
    result = report(mobilenet_like(32), sizes=False)
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert [row["layer"] for row in data["rows"]] == [
        r.layer for r in result.rows
    ]
    assert data["rows"][0]["shape"] == list(result.rows[0].shape)
    assert data["sparsity"] == result.sparsity
    litert = data["runtimes"]["litert"]
    assert (litert["num_faster"], litert["num_weights"]) == (1, 4)
    # The classifier's kernel is all zeros: remove it, not run it sparse.
    head = [v for v in result.verdicts if v.layer == result.rows[3].layer]
    assert [v.faster for v in head] == [False, False, False, True]
    assert "remove the layer" in head[0].reason
    pw = result.rows[2]
    assert litert["faster_mac_share"] == pw.dense_macs / result.dense_macs
    assert len(data["verdicts"]) == 4 * len(result.rows)


def test_density_maps_pool_long_sides():
    mask = np.ones((300, 10), "float32")
    mask[:150] = 0.0
    mask[150:153, 0] = 0.0
    ((layer, weight, density),) = density_maps(dense_model(mask))
    assert (layer, weight, density.shape) == ("fc", "kernel", (100, 10))
    np.testing.assert_array_equal(density[:50], 0.0)
    assert density[50, 0] == 0.0 and density[51, 0] == 1.0
    np.testing.assert_array_equal(density[50:, 1:], 1.0)


def test_bad_arguments():
    with pytest.raises(TypeError, match="Received: model of type Dense"):
        report(L.Dense(3))
    with pytest.raises(ValueError, match="must be built"):
        report(keras.Sequential([L.Dense(3)]))
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, **ZEROS)])
    with pytest.raises(TypeError, match="Received: sizes='yes'"):
        report(model, sizes="yes")
