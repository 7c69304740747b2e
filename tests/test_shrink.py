"""`structural.shrink`: all-zero channels cut away, outputs unchanged."""

import keras
import numpy as np
import pytest
from conftest import built_subclassed

import keras_sparsity as sparsity
from keras_sparsity.structural import shrink

L = keras.layers


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def zero_channels(layer, channels, bias=0.0):
    """Zeroes output channels of a Dense/Conv/SeparableConv layer (the
    pointwise kernel's columns for a SeparableConv); sets their bias."""
    weights = layer.get_weights()
    kernel_index = 1 if isinstance(layer, L.SeparableConv2D) else 0
    weights[kernel_index][..., channels] = 0.0
    if layer.use_bias:
        weights[-1][channels] = bias
    layer.set_weights(weights)


def randomize_batch_norm(layer, seed=0):
    rng = np.random.RandomState(seed)
    size = layer.gamma.shape[0]
    layer.set_weights(
        [
            rng.uniform(0.5, 1.5, size).astype("float32"),
            rng.uniform(-0.5, 0.5, size).astype("float32"),
            rng.uniform(-0.5, 0.5, size).astype("float32"),
            rng.uniform(0.5, 1.5, size).astype("float32"),
        ]
    )


def data(shape, seed=0):
    return np.random.RandomState(seed).rand(4, *shape).astype("float32")


def check_same_outputs(model, x, **kwargs):
    """Shrinks `model`; checks outputs and the plan's parameter count."""
    smaller, plan = shrink(model, return_plan=True, **kwargs)
    np.testing.assert_allclose(
        outputs(smaller, x), outputs(model, x), atol=1e-5, rtol=1e-5
    )
    assert smaller.count_params() == plan.num_parameters_after
    assert type(smaller) is type(model)
    return smaller, plan


def group_of(plan, producer):
    (group,) = [g for g in plan.groups if producer in g.producers]
    return group


def test_dense_units_are_removed_and_the_model_is_not_edited():
    model = keras.Sequential(
        [
            keras.Input((10,)),
            L.Dense(16, activation="relu", name="first"),
            L.Dense(8, name="second"),
            L.Dense(3, name="last"),
        ]
    )
    zero_channels(model.get_layer("first"), [0, 3, 5, 7, 9])
    zero_channels(model.get_layer("second"), [1, 2, 6])
    before = [w.copy() for w in model.get_weights()]
    smaller, plan = check_same_outputs(model, data((10,)))
    assert smaller.get_layer("first").units == 11
    assert smaller.get_layer("second").units == 5
    assert smaller.get_layer("last").kernel.shape == (5, 3)
    assert plan.num_parameters == model.count_params()
    assert plan.num_parameters == (10 * 16 + 16) + (16 * 8 + 8) + (8 * 3 + 3)
    assert plan.num_parameters_after == (10 * 11 + 11) + (11 * 5 + 5) + (
        5 * 3 + 3
    )
    assert model.get_layer("first").units == 16
    for old, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, now)


def test_conv_batch_norm_relu_conv_cuts_filters_and_statistics():
    inputs = keras.Input((10, 10, 3))
    x = L.Conv2D(8, 3, name="conv1")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(6, 3, padding="same", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    randomize_batch_norm(model.get_layer("bn"))
    bn = model.get_layer("bn")
    gamma, beta, mean, var = bn.get_weights()
    beta[[1, 4]] = -5.0  # post-BN negative: ReLU makes the channels 0
    bn.set_weights([gamma, beta, mean, var])
    zero_channels(model.get_layer("conv1"), [1, 4])
    zero_channels(model.get_layer("conv2"), [0, 5])
    smaller, plan = check_same_outputs(model, data((10, 10, 3)))
    assert smaller.get_layer("conv1").filters == 6
    assert smaller.get_layer("bn").gamma.shape == (6,)
    assert smaller.get_layer("conv2").kernel.shape == (3, 3, 6, 4)
    assert smaller.get_layer("head").kernel.shape == (4, 2)
    group = group_of(plan, "conv1")
    assert group.members == ("bn", "relu") and group.consumers == ("conv2",)
    assert group.removed == (1, 4)


def residual_model():
    inputs = keras.Input((8, 8, 4))
    a = L.Conv2D(6, 1, name="conv_a")(inputs)
    b = L.Conv2D(6, 3, padding="same", name="conv_b")(inputs)
    x = L.Add(name="add")([a, b])
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(5, 1, name="conv_c")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x))


def test_residual_add_removes_only_channels_zero_in_every_branch():
    model = residual_model()
    zero_channels(model.get_layer("conv_a"), [0, 1, 2])
    zero_channels(model.get_layer("conv_b"), [0, 1])
    smaller, plan = check_same_outputs(model, data((8, 8, 4)))
    group = group_of(plan, "conv_a")
    assert set(group.producers) == {"conv_a", "conv_b"}
    assert group.removed == (0, 1)  # channel 2 is zero in conv_a only
    assert smaller.get_layer("conv_a").filters == 4
    assert smaller.get_layer("conv_b").filters == 4
    assert smaller.get_layer("conv_c").kernel.shape == (1, 1, 4, 5)


def test_plan_lists_each_groups_members_on_a_crafted_graph():
    model = residual_model()
    zero_channels(model.get_layer("conv_c"), [3])
    plan = shrink(model, plan_only=True)
    assert isinstance(plan, sparsity.structural.ShrinkPlan)
    assert len(plan.groups) == 3
    residual = group_of(plan, "conv_a")
    assert residual.members == ("add", "relu")
    assert residual.consumers == ("conv_c",)
    assert residual.num_kept == 6 and residual.reasons
    inner = group_of(plan, "conv_c")
    assert inner.members == ("gap",) and inner.consumers == ("head",)
    assert inner.kept == (0, 1, 2, 4) and not inner.reasons
    head = group_of(plan, "head")
    assert head.reasons == ("reaches a model output",)
    text = str(plan)
    assert "conv_a + conv_b: 6 -> 6 channels" in text
    assert "conv_c: 5 -> 4 channels" in text
    assert "kept: reaches a model output" in text


def test_concatenate_maps_each_input_at_its_offset():
    inputs = keras.Input((6,))
    a = L.Dense(6, activation="relu", name="a")(inputs)
    b = L.Dense(5, activation="tanh", name="b")(inputs)
    x = L.Concatenate(name="cat")([a, b])
    model = keras.Model(inputs, L.Dense(3, name="head")(x))
    zero_channels(model.get_layer("a"), [1, 4])
    zero_channels(model.get_layer("b"), [0, 3])
    smaller, plan = check_same_outputs(model, data((6,)))
    assert group_of(plan, "a").removed == (1, 4)
    assert group_of(plan, "b").removed == (0, 3)
    head = model.get_layer("head").kernel
    rows = [0, 2, 3, 5, 7, 8, 10]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(smaller.get_layer("head").kernel),
        keras.ops.convert_to_numpy(head)[rows],
    )


def test_depthwise_channels_follow_their_input():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 1, name="conv")(inputs)
    x = L.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(4, 1, name="project")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    randomize_batch_norm(model.get_layer("bn"))
    depthwise = model.get_layer("depthwise")
    kernel, bias = depthwise.get_weights()
    depthwise.set_weights([kernel, bias + 0.3])  # constants to fold
    zero_channels(model.get_layer("conv"), [2, 5])
    smaller, plan = check_same_outputs(model, data((8, 8, 3)))
    assert smaller.get_layer("depthwise").kernel.shape == (3, 3, 4, 1)
    assert smaller.get_layer("bn").gamma.shape == (4,)
    assert smaller.get_layer("project").kernel.shape == (1, 1, 4, 4)
    assert group_of(plan, "conv").members == ("depthwise", "bn", "relu")


def test_separable_conv_cuts_depthwise_inputs_and_pointwise_outputs():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 1, name="conv")(inputs)
    x = L.SeparableConv2D(5, 3, depth_multiplier=2, name="separable")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    zero_channels(model.get_layer("conv"), [0, 3], bias=0.5)  # folded
    zero_channels(model.get_layer("separable"), [1])
    smaller, _ = check_same_outputs(model, data((8, 8, 3)))
    separable = smaller.get_layer("separable")
    assert separable.depthwise_kernel.shape == (3, 3, 4, 2)
    assert separable.pointwise_kernel.shape == (1, 1, 8, 4)
    assert smaller.get_layer("head").kernel.shape == (4, 2)


def test_flatten_after_conv_cuts_every_position_of_a_channel():
    inputs = keras.Input((5, 5, 2))
    x = L.Conv2D(6, 3, name="conv")(inputs)
    x = L.Flatten(name="flatten")(x)
    model = keras.Model(inputs, L.Dense(4, name="head")(x))
    zero_channels(model.get_layer("conv"), [1, 2], bias=0.3)
    smaller, plan = check_same_outputs(model, data((5, 5, 2)))
    assert smaller.get_layer("head").kernel.shape == (3 * 3 * 4, 4)
    assert group_of(plan, "conv").members == ("flatten",)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_zero_filter_with_bias_is_folded_into_a_valid_consumer(batch_norm):
    inputs = keras.Input((9, 9, 3))
    x = L.Conv2D(8, 3, name="conv")(inputs)
    if batch_norm:
        x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("relu", name="act")(x)
    x = L.Conv2D(4, 3, name="consumer")(x)
    model = keras.Model(inputs, L.Flatten()(x))
    if batch_norm:
        randomize_batch_norm(model.get_layer("bn"))
    zero_channels(model.get_layer("conv"), [0, 6], bias=0.8)
    smaller, plan = check_same_outputs(model, data((9, 9, 3)))
    assert smaller.get_layer("conv").filters == 6
    assert group_of(plan, "conv").removed == (0, 6)


def test_constant_channel_before_same_padding_is_kept_with_reason():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 1, name="conv")(inputs)
    x = L.Conv2D(3, 3, padding="same", name="consumer")(x)
    model = keras.Model(inputs, L.Flatten()(x))
    zero_channels(model.get_layer("conv"), [1], bias=0.8)  # constant
    zero_channels(model.get_layer("conv"), [2])  # zero
    smaller, plan = check_same_outputs(model, data((6, 6, 2)))
    group = group_of(plan, "conv")
    assert group.removed == (2,)
    assert "consumer cannot fold" in group.reasons[0]


def test_layer_normalization_group_is_kept_and_named():
    inputs = keras.Input((6,))
    x = L.Dense(8, name="dense")(inputs)
    x = L.LayerNormalization(name="norm")(x)
    model = keras.Model(inputs, L.Dense(3, name="head")(x))
    zero_channels(model.get_layer("dense"), [0, 1, 2])
    smaller, plan = check_same_outputs(model, data((6,)))
    group = group_of(plan, "dense")
    assert group.num_kept == 8
    assert "norm" in group.reasons[0]
    assert "LayerNormalization" in group.reasons[0]
    assert smaller.get_layer("dense").units == 8
    assert "kept: norm is a LayerNormalization" in str(plan)


def test_shrunk_model_saves_and_loads_without_custom_objects(tmp_path):
    model = residual_model()
    zero_channels(model.get_layer("conv_a"), [0, 1])
    zero_channels(model.get_layer("conv_b"), [0, 1])
    smaller = shrink(model)
    path = str(tmp_path / "small.keras")
    smaller.save(path)
    loaded = keras.models.load_model(path)
    x = data((8, 8, 4))
    np.testing.assert_allclose(outputs(loaded, x), outputs(model, x), atol=1e-5)
    assert loaded.get_layer("conv_a").filters == 4


def test_pruned_model_is_stripped_first():
    model = keras.Sequential(
        [keras.Input((6,)), L.Dense(8, name="first"), L.Dense(2)]
    )
    pruned = sparsity.prune_low_magnitude(
        model, sparsity.ConstantSparsity(0.5, begin_step=0)
    )
    wrapper = pruned.layers[0]
    kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
    kernel[:, [2, 5]] = 0.0
    wrapper.layer.kernel.assign(kernel)
    smaller = shrink(pruned)
    x = data((6,))
    expected = outputs(sparsity.strip_pruning(pruned), x)
    np.testing.assert_allclose(outputs(smaller, x), expected, atol=1e-5)
    assert smaller.get_layer("first").units == 6


def test_subclassed_model_is_rejected_by_name():
    net = built_subclassed(2, 3, name="net")
    with pytest.raises(
        ValueError, match="Received: model='net' of type Subclassed"
    ):
        shrink(net)


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match="Received: model="):
        shrink(L.Dense(2))
    model = residual_model()
    with pytest.raises(TypeError, match="plan_only='yes'"):
        shrink(model, plan_only="yes")
    with pytest.raises(ValueError, match="return_plan=True"):
        shrink(model, plan_only=True, return_plan=True)


def test_mobilenet_v2_loses_the_zeroed_expansion_channels():
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    )
    rng = np.random.RandomState(0)
    removed = {}
    for block in (1, 2, 4, 8, 15):
        expand = model.get_layer(f"block_{block}_expand")
        channels = sorted(rng.choice(expand.filters, 5, replace=False))
        zero_channels(expand, channels)
        for norm in ("expand_BN", "depthwise_BN"):
            bn = model.get_layer(f"block_{block}_{norm}")
            gamma, beta, mean, var = bn.get_weights()
            beta[channels] = -10.0  # the channels stay 0 after ReLU6
            bn.set_weights([gamma, beta, mean, var])
        removed[expand.name] = tuple(int(c) for c in channels)
    smaller, plan = check_same_outputs(model, data((32, 32, 3)))
    for name, channels in removed.items():
        assert group_of(plan, name).removed == channels
        assert (
            smaller.get_layer(name).filters == model.get_layer(name).filters - 5
        )
    assert plan.num_parameters_after < plan.num_parameters


def attention_model(shared=False):
    inputs = keras.Input((5, 16))
    x = L.Dense(16, name="embed")(inputs)
    attention = L.MultiHeadAttention(4, 8, name="mha")
    a = attention(x, x)
    if shared:
        a = attention(a, a)
    x = L.LayerNormalization()(L.Add()([x, a]))
    outputs = L.Dense(3)(L.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs)


def silence_heads(layer):
    """Head 1: value projection zero; head 3: output rows zero."""
    weights = layer.get_weights()  # q k, q b, k k, k b, v k, v b, o k, o b
    weights[4][:, 1] = 0.0
    weights[5][1] = 0.0
    weights[6][3] = 0.0
    layer.set_weights(weights)


def test_silent_attention_heads_are_cut(tmp_path):
    model = attention_model()
    silence_heads(model.get_layer("mha"))
    x = data((5, 16))
    smaller, plan = check_same_outputs(model, x)
    (heads,) = [g for g in plan.groups if g.unit == "heads"]
    assert (heads.producers, heads.num_channels, heads.kept) == (
        ("mha",), 4, (0, 2)
    )
    assert plan.num_heads_removed == 2 and plan.num_removed == 0
    assert "2 heads removed" in str(plan) and "mha: 4 -> 2 heads" in str(plan)
    cut = smaller.get_layer("mha")
    assert cut.num_heads == 2
    assert tuple(cut.value_dense.kernel.shape) == (16, 2, 8)
    assert tuple(cut.output_dense.kernel.shape) == (2, 8, 16)
    path = tmp_path / "smaller.keras"
    smaller.save(path)
    np.testing.assert_allclose(
        outputs(keras.models.load_model(path), x), outputs(model, x),
        atol=1e-5, rtol=1e-5,
    )


def test_attention_heads_kept_when_none_is_silent_or_layer_is_shared():
    plan = shrink(attention_model(), plan_only=True)
    (heads,) = [g for g in plan.groups if g.unit == "heads"]
    assert heads.num_kept == 4
    assert heads.reasons == (
        "no head is silent (value projection or output rows all zero)",
    )
    model = attention_model(shared=True)
    silence_heads(model.get_layer("mha"))
    plan = shrink(model, plan_only=True)
    (heads,) = [g for g in plan.groups if g.unit == "heads"]
    assert heads.num_kept == 4
    assert heads.reasons == ("is called more than once",)


def test_transposed_convolution_cuts_its_outputs_and_inputs():
    """Conv2DTranspose kernels are (kh, kw, out, in): the cut runs along
    axis -2 for its own filters and -1 for the channels it reads."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = L.Conv2DTranspose(6, 3, strides=2, padding="same", name="up")(x)
    x = L.ReLU()(x)
    outputs = L.Conv2D(4, 1, name="out")(x)
    model = keras.Model(inputs, outputs)
    zero_channels(model.get_layer("conv"), [1, 4])
    up = model.get_layer("up")
    kernel, bias = up.get_weights()
    kernel[:, :, [0, 5], :] = 0.0
    bias[[0, 5]] = 0.0
    up.set_weights([kernel, bias])
    smaller, plan = check_same_outputs(model, data((6, 6, 3)))
    assert group_of(plan, "conv").removed == (1, 4)
    assert group_of(plan, "up").removed == (0, 5)
    assert tuple(smaller.get_layer("up").kernel.shape) == (3, 3, 4, 6)
