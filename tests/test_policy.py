"""Pruning policies: TFMOT's `pruning_policy_test.py` cases on Keras 3."""

import re

import keras
import numpy as np
import pytest
from conftest import assert_exact_sparsity
from conftest import compile_model
from conftest import sync
from conftest import to_numpy
from conftest import toy_data

import keras_sparsity as sparsity
from keras_sparsity import policy as policy_module
from keras_sparsity.callbacks import pruning_wrappers

L = keras.layers


def prune(model):
    return sparsity.prune_low_magnitude(
        model,
        pruning_schedule=sparsity.ConstantSparsity(0.5, 0),
        pruning_policy=sparsity.PruneForLatencyOnXNNPack(),
    )


def count_pruned(model):
    return len(pruning_wrappers(model))


def stem(inputs, filters=16):
    """ZeroPadding2D(1) then a 3x3 stride-2 'valid' Conv2D: the start layer."""
    x = L.ZeroPadding2D(padding=1)(inputs)
    return L.Conv2D(filters, (3, 3), strides=(2, 2), padding="valid")(x)


def raises(prefix):
    """Matches TFMOT's message as a prefix (details may follow)."""
    return pytest.raises(ValueError, match="^" + re.escape(prefix))


def test_policies_are_exported():
    assert {"PruningPolicy", "PruneForLatencyOnXNNPack"} <= set(
        sparsity.__all__
    )
    assert issubclass(sparsity.PruneForLatencyOnXNNPack, sparsity.PruningPolicy)


def test_pruning_policy_needs_both_methods():
    class OnlyAllow(sparsity.PruningPolicy):
        def allow_pruning(self, layer):
            return True

    with pytest.raises(TypeError, match="ensure_model_supports_pruning"):
        OnlyAllow()


def test_custom_policy_from_docstring_chooses_layers_and_rejects_models():
    class PruneDenseOnly(sparsity.PruningPolicy):
        def allow_pruning(self, layer):
            return isinstance(layer, L.Dense)

        def ensure_model_supports_pruning(self, model):
            if not any(isinstance(layer, L.Dense) for layer in model.layers):
                raise ValueError("PruneDenseOnly needs a Dense layer.")

    model = keras.Sequential(
        [keras.Input((6, 6, 2)), L.Conv2D(4, 3), L.Flatten(), L.Dense(3)]
    )
    pruned = sparsity.prune_low_magnitude(
        model, pruning_policy=PruneDenseOnly()
    )
    assert [type(w.layer) for w in pruning_wrappers(pruned)] == [L.Dense]
    no_dense = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="needs a Dense layer"):
        sparsity.prune_low_magnitude(no_dense, pruning_policy=PruneDenseOnly())


def test_allow_pruning_accepts_only_1x1_conv2d():
    policy = sparsity.PruneForLatencyOnXNNPack()
    assert policy.allow_pruning(L.Conv2D(4, [1, 1]))
    assert not policy.allow_pruning(L.Conv2D(4, 3))
    assert not policy.allow_pruning(L.DepthwiseConv2D(1))
    assert not policy.allow_pruning(L.Dense(4))


def test_no_start_layer_raises_tfmot_message():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(16, (3, 3), strides=(2, 2), padding="same")(i)
    x = L.Conv2D(16, [1, 1])(x)
    model = keras.Model(i, L.GlobalAveragePooling2D()(x))
    with raises(policy_module.START_LAYER_ERROR) as error:
        prune(model)
    assert "global_average_pooling2d" in str(error.value)


def test_start_layer_must_follow_padding_of_one():
    i = keras.Input((8, 8, 3))
    x = L.ZeroPadding2D(padding=2)(i)
    x = L.Conv2D(16, 3, strides=2, padding="valid")(x)
    model = keras.Model(i, L.GlobalAveragePooling2D()(x))
    with raises(policy_module.START_LAYER_ERROR):
        prune(model)


def test_no_end_layer_raises_tfmot_message():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(16, [1, 1])(stem(i))
    model = keras.Model(i, L.AveragePooling2D(2)(x))
    with raises(policy_module.END_LAYER_ERROR) as error:
        prune(model)
    assert "InputLayer" in str(error.value)


def test_unsupported_middle_layer_raises_tfmot_message():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(16, [1, 1])(stem(i))
    x = L.MaxPooling2D(pool_size=(2, 2), strides=(2, 2))(x)
    model = keras.Model(i, L.GlobalAveragePooling2D()(x))
    with raises(
        "Layer MaxPooling2D is not supported for the "
        "PruneForLatencyOnXNNPack pruning policy"
    ) as error:
        prune(model)
    assert "Received: layer 'max_pooling2d" in str(error.value)


def test_unsupported_keras_op_is_named_by_its_class():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(16, [1, 1])(stem(i))
    x = keras.ops.abs(x)
    model = keras.Model(i, L.GlobalAveragePooling2D()(x))
    with raises("Layer Absolute is not supported"):
        prune(model)


def test_subclassed_model_raises_tfmot_message():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with raises(policy_module.SUBCLASSED_ERROR):
        sparsity.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(
            Subclassed()
        )


def sequential_layers():
    return [
        L.ZeroPadding2D(padding=1),
        L.Conv2D(4, (3, 3), strides=(2, 2), padding="valid"),
        L.DepthwiseConv2D((3, 3), padding="same"),
        L.Conv2D(8, [1, 1]),
        L.GlobalAveragePooling2D(),
    ]


def test_unbuilt_sequential_raises_tfmot_message():
    with raises(policy_module.UNBUILT_ERROR):
        prune(keras.Sequential(sequential_layers()))


def test_sequential_prunes_its_one_1x1_conv():
    model = keras.Sequential([keras.Input((8, 8, 3))] + sequential_layers())
    assert count_pruned(prune(model)) == 1


def test_nested_sequential_is_walked_into():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.ZeroPadding2D(padding=1),
            L.Conv2D(4, (3, 3), strides=(2, 2), padding="valid"),
            keras.Sequential([L.Conv2D(8, [1, 1]), L.Conv2D(16, [1, 1])]),
            L.GlobalAveragePooling2D(),
        ]
    )
    assert count_pruned(prune(model)) == 2


def test_unsupported_layer_inside_nested_model_is_found():
    inner_input = keras.Input((4, 4, 4))
    inner = keras.Model(inner_input, L.MaxPooling2D()(inner_input))
    i = keras.Input((8, 8, 3))
    x = inner(stem(i, filters=4))
    x = L.Conv2D(8, [1, 1])(x)
    model = keras.Model(i, L.GlobalAveragePooling2D()(x))
    with raises("Layer MaxPooling2D is not supported"):
        prune(model)


def test_nested_functional_stem_is_found():
    inner_input = keras.Input((8, 8, 3))
    inner = keras.Model(inner_input, stem(inner_input, filters=4))
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(8, [1, 1])(inner(i))
    model = keras.Model(i, L.GlobalAveragePooling2D()(x))
    assert count_pruned(prune(model)) == 1


def test_reused_1x1_conv_is_pruned_once():
    i = keras.Input((8, 8, 3))
    conv = L.Conv2D(16, [1, 1])
    x = conv(conv(stem(i)))
    model = keras.Model(i, L.GlobalAveragePooling2D()(x))
    assert count_pruned(prune(model)) == 1


def test_model_without_1x1_conv_prunes_nothing():
    i = keras.Input((8, 8, 3))
    x = L.DepthwiseConv2D((3, 3), padding="same")(stem(i))
    x = L.Activation("relu")(x)
    model = keras.Model(i, L.GlobalAveragePooling2D()(x))
    assert count_pruned(prune(model)) == 0


def test_two_input_model_prunes_six_convs():
    i1 = keras.Input((16, 16, 3))
    x1 = stem(i1)
    x1_1 = L.DepthwiseConv2D((3, 3), padding="same")(x1)
    x1_2 = L.Conv2D(16, [1, 1])(x1)
    x1 = L.Add()([x1_1, x1_2])

    i2 = keras.Input((16, 16, 3))
    x2 = stem(i2, filters=8)
    x2 = L.ZeroPadding2D(padding=1)(x2)
    x2 = L.DepthwiseConv2D((3, 3), strides=(2, 2), padding="valid")(x2)
    x2_1 = L.GlobalAveragePooling2D(keepdims=True)(x2)
    x2_1 = L.Conv2D(32, [1, 1])(x2_1)
    x2_1 = L.Activation("sigmoid")(x2_1)
    x2_2 = L.Conv2D(32, [1, 1])(x2)
    x2_2 = L.UpSampling2D(interpolation="bilinear")(x2_2)
    x2 = L.Multiply()([x2_1, x2_2])

    x2 = L.Conv2D(16, [1, 1])(x2)
    x = L.Add()([x1, x2])
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    o1 = L.Conv2D(7, [1, 1])(x)
    o2 = L.Conv2D(3, [1, 1])(x)
    model = keras.Model([i1, i2], [o1, o2])
    assert count_pruned(prune(model)) == 6


def test_clone_with_shared_layers_prunes_one():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(16, [1, 1])(stem(i))
    original = keras.Model(i, L.GlobalAveragePooling2D()(x))
    cloned = keras.models.clone_model(
        original, clone_function=lambda layer: layer
    )
    assert count_pruned(prune(cloned)) == 1


def keras_ops_residual_model():
    """TFMOT's TF-op residual case: `+`, `-`, `*` and an identity."""
    i = keras.Input((8, 8, 3))
    x = stem(i)
    residual = L.Conv2D(16, [1, 1])(x)
    x = x + residual
    x = x - residual
    x = keras.ops.multiply(x, residual)
    x = L.Identity()(x)
    return keras.Model(i, L.GlobalAveragePooling2D()(x))


def test_keras_ops_residual_is_supported():
    model = keras_ops_residual_model()
    policy = sparsity.PruneForLatencyOnXNNPack()
    policy.ensure_model_supports_pruning(model)
    allowed = [x for x in model.layers if policy.allow_pruning(x)]
    assert [x.kernel_size for x in allowed] == [(1, 1)]


def test_keras_ops_residual_prunes_one_conv():
    assert count_pruned(prune(keras_ops_residual_model())) == 1


def test_pruning_a_pruned_model_again_is_an_error():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(16, [1, 1])(stem(i))
    model = keras.Model(i, L.GlobalAveragePooling2D()(x))
    pruned = prune(model)
    assert count_pruned(pruned) == 1
    with pytest.raises(ValueError, match="already pruned.*strip_pruning"):
        prune(pruned)


def test_depthwise_rules_follow_xnnpack():
    policy = sparsity.PruneForLatencyOnXNNPack()

    def model_with(*layers):
        i = keras.Input((16, 16, 3))
        x = stem(i, filters=4)
        for layer in layers:
            x = layer(x)
        return keras.Model(i, L.GlobalAveragePooling2D()(x))

    accepted = [
        [L.DepthwiseConv2D(5, padding="same")],
        [L.ZeroPadding2D(2), L.DepthwiseConv2D(5, strides=2)],
        [L.ZeroPadding2D(1), L.DepthwiseConv2D(3, strides=1)],
        [L.BatchNormalization(), L.ReLU(6.0), L.Dropout(0.1)],
        [L.Activation("relu6"), L.LeakyReLU(), L.ELU()],
    ]
    for layers in accepted:
        policy.ensure_model_supports_pruning(model_with(*layers))
    rejected = [
        [L.DepthwiseConv2D(3, strides=2, padding="same")],
        [L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)],
        [L.ZeroPadding2D(1), L.DepthwiseConv2D(5, strides=2)],
        [L.DepthwiseConv2D(3)],
        [L.Conv2D(4, 1, strides=2)],
        [L.Activation("tanh")],
        [L.UpSampling2D()],
    ]
    for layers in rejected:
        with raises(f"Layer {type(layers[-1]).__name__} is not supported"):
            policy.ensure_model_supports_pruning(model_with(*layers))


def test_mobilenet_like_model_prunes_only_the_1x1_conv_in_fit():
    i = keras.Input((16, 16, 3))
    x = stem(i, filters=8)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(16, 1)(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(i, L.Dense(2)(x))
    pruned = sparsity.prune_low_magnitude(
        model,
        pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1),
        pruning_policy=sparsity.PruneForLatencyOnXNNPack(),
    )
    compile_model(pruned, optimizer="sgd")
    x_train, y_train = toy_data((16, 16, 3), num_samples=8, num_classes=2)
    pruned.fit(x_train, y_train, batch_size=4, epochs=1, verbose=0)
    sync(pruned)

    (wrapper,) = pruning_wrappers(pruned)
    assert wrapper.layer.kernel_size == (1, 1)
    assert_exact_sparsity(pruned, 0.5)
    kernel = to_numpy(wrapper.layer.kernel)
    assert np.count_nonzero(kernel == 0) == kernel.size // 2
    others = [
        layer
        for layer in pruned.layers
        if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense))
    ]
    assert len(others) == 3
    for layer in others:
        assert np.count_nonzero(to_numpy(layer.kernel) == 0) == 0, layer.name
