"""`prune_channels`: whole channel groups pruned by the engine, then shrunk."""

import keras
import numpy as np
import pytest
from conftest import built_subclassed

import keras_sparsity as sparsity
from keras_sparsity.structural import channels as channels_lib

L = keras.layers
HALF = sparsity.ConstantSparsity(0.5, begin_step=0)


def mlp(seed=0):
    """Input 6 -> Dense(8) -> Dense(12) -> Dense(3), fixed weights whose
    column norms are all different."""
    model = keras.Sequential(
        [keras.Input((6,)), L.Dense(8, name="a"), L.Dense(12, name="b"),
         L.Dense(3, name="out")]
    )
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        layer.set_weights(
            [rng.normal(size=kernel.shape).astype("float32"),
             rng.normal(size=bias.shape).astype("float32")]
        )
    return model


def one_step(pruned, x, y, learning_rate=0.0, **compile_kwargs):
    """One `fit` step; with learning rate 0 the weights stay as they were,
    so the masks are those of the initial weights."""
    pruned.compile(
        keras.optimizers.SGD(learning_rate), "mse", **compile_kwargs
    )
    pruned.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    return pruned


def masks_of(pruned):
    return {
        (w.layer.name, spec.weight): keras.ops.convert_to_numpy(m)
        for w in pruned.layers if isinstance(w, channels_lib.PruneChannels)
        for spec, m in zip(w.channels, w.masks)
    }


def kept_columns(mask):
    return np.flatnonzero(mask.reshape(-1, mask.shape[-1]).max(axis=0) > 0)


def top(scores, count):
    """NumPy reference: the `count` highest scores, ties to the lowest
    index."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return np.sort(order[:count])


def data(model, n=8, seed=1):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(n,) + tuple(model.input_shape[1:])).astype("float32")
    y = rng.normal(size=(n,) + tuple(model.output_shape[1:])).astype("float32")
    return x, y


@pytest.mark.parametrize(
    "importance, jit", [("l1", False), ("l2", False), ("l2", True)]
)
def test_norm_importance_matches_numpy(importance, jit):
    """`jit`: XLA on TensorFlow, torch.compile on PyTorch (JAX always
    jits)."""
    model = mlp()
    x, y = data(model)
    pruned = one_step(
        sparsity.prune_channels(model, HALF, importance=importance), x, y,
        jit_compile=jit,
    )
    masks = masks_of(pruned)
    for name, size in (("a", 8), ("b", 12)):
        kernel = model.get_layer(name).get_weights()[0]
        scores = (
            np.abs(kernel).sum(0) if importance == "l1"
            else np.sqrt((kernel**2).sum(0))
        )
        expected = top(scores, size // 2)
        np.testing.assert_array_equal(
            kept_columns(masks[(name, "kernel")]), expected
        )
        bias_mask = masks[(name, "bias")]
        np.testing.assert_array_equal(np.flatnonzero(bias_mask), expected)
        wrapper = pruned.get_layer(f"prune_channels_{name}")
        kernel_now, bias_now = wrapper.layer.get_weights()
        removed = np.setdiff1d(np.arange(size), expected)
        assert not kernel_now[:, removed].any() and not bias_now[removed].any()
        np.testing.assert_array_equal(
            kernel_now[:, expected], kernel[:, expected]
        )
    # The output layer's group reaches the model output: never wrapped.
    assert not isinstance(pruned.layers[-1], channels_lib.PruneChannels)
    # The user's model is untouched.
    assert np.count_nonzero(model.get_layer("a").get_weights()[0]) == 48


def residual_model():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="bn0")(x)
    x = L.ReLU()(x)
    y = L.Conv2D(8, 3, padding="same", name="branch")(x)
    y = L.BatchNormalization(name="bn1")(y)
    x = L.Add()([x, y])
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(16, 1, name="expand")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU()(x)
    z = L.Conv2D(8, 1, name="side")(x)
    x = L.Concatenate()([x, z])
    x = L.BatchNormalization(name="bn3")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.RandomState(3)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(
                [
                    (rng.uniform(0.5, 1.5, w.shape) if "variance" in w.name
                     else rng.normal(size=w.shape)).astype("float32")
                    for w in layer.weights
                ]
            )
    return model


def test_coupled_layers_lose_the_same_channels():
    model = residual_model()
    x, y = data(model)
    pruned = one_step(
        sparsity.prune_channels(model, HALF, importance="l2"), x, y
    )
    masks = masks_of(pruned)
    # The residual group: stem + branch write it, BN, depthwise follow.
    stem = model.get_layer("stem").get_weights()[0]
    branch = model.get_layer("branch").get_weights()[0]
    scores = np.sqrt((stem**2).sum((0, 1, 2)) + (branch**2).sum((0, 1, 2)))
    expected = top(scores, 4)
    for key in (("stem", "kernel"), ("branch", "kernel")):
        np.testing.assert_array_equal(kept_columns(masks[key]), expected)
    for key in (("bn0", "gamma"), ("bn1", "beta"), ("dw", "bias")):
        np.testing.assert_array_equal(np.flatnonzero(masks[key]), expected)
    depthwise = masks[("dw", "kernel")]
    np.testing.assert_array_equal(
        np.flatnonzero(depthwise[0, 0, :, 0]), expected
    )
    # bn3 normalises a concatenation: expand's group then side's, each at
    # its offset.
    expand = model.get_layer("expand").get_weights()[0]
    side = model.get_layer("side").get_weights()[0]
    kept_expand = top(np.sqrt((expand**2).sum((0, 1, 2))), 8)
    kept_side = top(np.sqrt((side**2).sum((0, 1, 2))), 4)
    np.testing.assert_array_equal(
        np.flatnonzero(masks[("bn3", "gamma")]),
        np.concatenate([kept_expand, 16 + kept_side]),
    )
    # Removed channels are exactly zero after their layers, so shrink cuts
    # them all and the outputs do not change.
    stripped = sparsity.strip_pruning(pruned)
    smaller, plan = sparsity.shrink(stripped, return_plan=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(smaller(x, training=False)),
        keras.ops.convert_to_numpy(stripped(x, training=False)),
        atol=1e-4, rtol=1e-4,
    )
    assert plan.num_removed == 4 + 8 + 4
    assert smaller.count_params() == plan.num_parameters_after
    assert smaller.get_layer("stem").filters == 4
    assert smaller.get_layer("expand").filters == 8


def transformer_block():
    inputs = keras.Input((5, 16))
    x = L.Dense(16, name="embed")(inputs)
    a = L.MultiHeadAttention(4, 8, name="mha")(x, x)
    x = L.LayerNormalization()(L.Add()([x, a]))
    f = L.Dense(32, activation="relu", name="ff1")(x)
    x = L.Add()([x, L.Dense(16, name="ff2")(f)])
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs)


def test_attention_heads_and_feed_forward_units():
    """Heads are ranked by their value projection and output rows; the
    losers' value columns and output rows are zeroed, so `shrink` cuts
    them; the feed-forward units are a channel group of their own."""
    model = transformer_block()
    x, y = data(model)
    pruned = one_step(sparsity.prune_channels(model, HALF), x, y)
    masks = masks_of(pruned)
    mha = model.get_layer("mha")
    value = keras.ops.convert_to_numpy(mha.value_dense.kernel)
    output = keras.ops.convert_to_numpy(mha.output_dense.kernel)
    scores = np.sqrt((value**2).sum((0, 2)) + (output**2).sum((1, 2)))
    expected = top(scores, 2)
    np.testing.assert_array_equal(
        np.flatnonzero(masks[("mha", "value_dense.kernel")][0, :, 0]), expected
    )
    np.testing.assert_array_equal(
        np.flatnonzero(masks[("mha", "output_dense.kernel")][:, 0, 0]), expected
    )
    ff1 = model.get_layer("ff1").get_weights()[0]
    np.testing.assert_array_equal(
        kept_columns(masks[("ff1", "kernel")]),
        top(np.sqrt((ff1**2).sum(0)), 16),
    )
    stripped = sparsity.strip_pruning(pruned)
    smaller, plan = sparsity.shrink(stripped, return_plan=True)
    (heads,) = [g for g in plan.groups if g.unit == "heads"]
    assert heads.kept == tuple(expected)
    assert smaller.get_layer("mha").num_heads == 2
    assert smaller.get_layer("ff1").units == 16
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(smaller(x)),
        keras.ops.convert_to_numpy(stripped(x)),
        atol=1e-4, rtol=1e-4,
    )


def test_round_to_and_global_allocation_match_numpy():
    model = mlp()
    x, y = data(model)
    pruned = one_step(
        sparsity.prune_channels(
            model, sparsity.ConstantSparsity(0.7, begin_step=0),
            allocation="global", round_to=2,
        ),
        x, y,
    )
    masks = masks_of(pruned)
    scores = {
        name: np.sqrt((model.get_layer(name).get_weights()[0] ** 2).sum(0))
        for name in ("a", "b")
    }
    normalized = np.concatenate(
        [s / (s.mean() + 1e-12) for s in scores.values()]
    )
    chosen = np.zeros(20, bool)
    chosen[top(normalized, round(20 * 0.3))] = True
    counts = {"a": chosen[:8].sum(), "b": chosen[8:].sum()}
    for name, size in (("a", 8), ("b", 12)):
        count = min(max(-(-counts[name] // 2) * 2, 2), size)
        np.testing.assert_array_equal(
            kept_columns(masks[(name, "kernel")]), top(scores[name], count)
        )
        assert count % 2 == 0


def test_uniform_round_to_keeps_multiples():
    model = mlp()
    x, y = data(model)
    pruned = one_step(
        sparsity.prune_channels(
            model, sparsity.ConstantSparsity(0.9, begin_step=0), round_to=4
        ),
        x, y,
    )
    masks = masks_of(pruned)
    # keep_count(8, 0.9) = 1 -> 4; keep_count(12, 0.9) = 1 -> 4.
    assert len(kept_columns(masks[("a", "kernel")])) == 4
    assert len(kept_columns(masks[("b", "kernel")])) == 4


def test_taylor_importance_matches_numpy_gradients():
    """One hidden Dense group; |w * g| summed per column ranks it. With
    learning rate 0 the saliency state after one step is a positive
    multiple of |w * g|, so the ranking is that of |w * g|."""
    model = keras.Sequential(
        [keras.Input((5,)), L.Dense(10, use_bias=False, name="hidden"),
         L.Dense(1, use_bias=False, name="out")]
    )
    rng = np.random.RandomState(0)
    w1 = rng.normal(size=(5, 10)).astype("float32")
    w2 = rng.normal(size=(10, 1)).astype("float32")
    model.set_weights([w1, w2])
    x = rng.normal(size=(16, 5)).astype("float32")
    t = rng.normal(size=(16, 1)).astype("float32")
    pruned = one_step(
        sparsity.prune_channels(model, HALF, importance="taylor"), x, t
    )
    error = 2.0 * (x @ w1 @ w2 - t) / len(x)
    grad = x.T @ (error @ w2.T)
    scores = np.abs(w1 * grad).sum(0)
    magnitude = np.sqrt((w1**2).sum(0))
    assert not np.array_equal(top(scores, 5), top(magnitude, 5))
    np.testing.assert_array_equal(
        kept_columns(masks_of(pruned)[("hidden", "kernel")]), top(scores, 5)
    )


def test_bn_gamma_importance_and_groups_without_norm():
    model = residual_model()
    x, y = data(model)
    pruned = one_step(
        sparsity.prune_channels(model, HALF, importance="bn_gamma"), x, y
    )
    masks = masks_of(pruned)
    gammas = np.abs(model.get_layer("bn0").get_weights()[0]) + np.abs(
        model.get_layer("bn1").get_weights()[0]
    )
    np.testing.assert_array_equal(
        kept_columns(masks[("stem", "kernel")]), top(gammas, 4)
    )
    # `side` feeds a BatchNormalization only through the concatenation
    # (bn3), whose gamma scores both groups at their offsets.
    gamma3 = np.abs(model.get_layer("bn3").get_weights()[0])
    np.testing.assert_array_equal(
        kept_columns(masks[("side", "kernel")]), top(gamma3[16:], 4)
    )
    with pytest.raises(ValueError, match="no channel group"):
        sparsity.prune_channels(mlp(), HALF, importance="bn_gamma")


def test_gradual_schedule_nests_and_resumes(tmp_path):
    model = residual_model()
    x, y = data(model, n=16)
    schedule = sparsity.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=4,
                                        power=1, frequency=1)
    pruned = sparsity.prune_channels(model, schedule)
    pruned.compile(keras.optimizers.SGD(0.01), "mse")
    kept = []
    for _ in range(5):
        pruned.fit(x, y, batch_size=16, epochs=1, verbose=0)
        kept.append(set(kept_columns(masks_of(pruned)[("expand", "kernel")])))
    assert [len(k) for k in kept] == [16, 13, 10, 7, 4]
    assert all(later <= earlier for earlier, later in zip(kept, kept[1:]))
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    for key, mask in masks_of(pruned).items():
        np.testing.assert_array_equal(masks_of(loaded)[key], mask)
    assert isinstance(
        loaded.get_layer("prune_channels_expand"), channels_lib.PruneChannels
    )
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(
        sorted(kept_columns(masks_of(loaded)[("expand", "kernel")])),
        sorted(kept[-1]),
    )
    smaller = sparsity.shrink(sparsity.strip_pruning(loaded))
    path = tmp_path / "smaller.keras"
    smaller.save(path)
    reloaded = keras.models.load_model(path)  # no custom objects needed
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(x, training=False)),
        keras.ops.convert_to_numpy(
            sparsity.strip_pruning(loaded)(x, training=False)
        ),
        atol=1e-4, rtol=1e-4,
    )


def apply_zero_gradients(model):
    """One optimizer step with zero gradients: the masks are computed, the
    weights do not move. Jitted on JAX (op by op it takes minutes on a
    model of this size), eager elsewhere."""
    optimizer, variables = model.optimizer, model.trainable_variables
    optimizer.build(variables)
    zeros = [keras.ops.zeros(v.shape, v.dtype) for v in variables]
    if keras.backend.backend() != "jax":
        optimizer.apply(zeros, variables)
        return
    import jax

    values, state = jax.jit(optimizer.stateless_apply)(
        [v.value for v in optimizer.variables],
        zeros,
        [v.value for v in variables],
    )
    for variable, value in zip(variables, values):
        variable.assign(value)
    for variable, value in zip(optimizer.variables, state):
        variable.assign(value)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["ResNet50", "MobileNetV2", "EfficientNetB0"]
)
def test_keras_applications_round_trip(name):
    """Masks set once through the engine (one optimizer step, zero
    gradients), then strip and shrink: outputs equal the masked model's
    and the parameters fall as the plan says."""
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(32, 32, 3), classes=10,
        classifier_activation=None,
    )
    pruned = sparsity.prune_channels(model, HALF, round_to=8)
    pruned.compile(keras.optimizers.SGD(0.0), "mse")
    apply_zero_gradients(pruned)
    wrappers = [
        w for w in pruned.layers if isinstance(w, channels_lib.PruneChannels)
    ]
    for wrapper in wrappers:
        for spec, mask in zip(wrapper.channels, wrapper.masks):
            vector = np.moveaxis(
                keras.ops.convert_to_numpy(mask), spec.axis, 0
            ).reshape(mask.shape[spec.axis], -1)[:, 0]
            for group, offset, length in spec.offsets():
                if group is not None:
                    kept = int(vector[offset : offset + length].sum())
                    assert kept % 8 == 0 or kept == length
                    assert kept == min(length, -(-round(length / 2) // 8) * 8)
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype("float32")
    stripped = sparsity.strip_pruning(pruned)
    smaller, plan = sparsity.shrink(stripped, return_plan=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(smaller(x, training=False)),
        keras.ops.convert_to_numpy(stripped(x, training=False)),
        atol=1e-3, rtol=1e-3,
    )
    assert smaller.count_params() == plan.num_parameters_after
    assert plan.num_parameters_after < 0.75 * model.count_params()


def test_bad_arguments():
    model = mlp()
    with pytest.raises(TypeError, match="pruning_schedule"):
        sparsity.prune_channels(model, 0.5)
    with pytest.raises(ValueError, match="importance.*'l3'"):
        sparsity.prune_channels(model, HALF, importance="l3")
    with pytest.raises(ValueError, match="allocation.*'erk'"):
        sparsity.prune_channels(model, HALF, allocation="erk")
    for bad in (0, -8, 2.5, True):
        with pytest.raises(ValueError, match="round_to"):
            sparsity.prune_channels(model, HALF, round_to=bad)
    with pytest.raises(ValueError, match="no channel group"):
        sparsity.prune_channels(model, HALF, round_to=16)

    subclassed = built_subclassed(4, 3)
    with pytest.raises(ValueError, match="Sequential or functional"):
        sparsity.prune_channels(subclassed, HALF)
    with pytest.raises(TypeError, match="model"):
        sparsity.prune_channels(L.Dense(3), HALF)
    pruned = sparsity.prune_low_magnitude(model)
    with pytest.raises(ValueError, match="already pruned"):
        sparsity.prune_channels(pruned, HALF)


@pytest.mark.slow
@pytest.mark.requires_data("tinyshakespeare.txt")
def test_heads_example_runs_tiny(capsys):
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "examples"))
    import prune_heads_shakespeare

    model, smaller, plan = prune_heads_shakespeare.main(
        ["--epochs", "1", "--num-train", "128", "--num-val", "8",
         "--fine-tune-epochs", "1"]
    )
    for block in (0, 1):
        assert smaller.get_layer(f"block_{block}_attention").num_heads == 2
        assert smaller.get_layer(f"block_{block}_up").units == 128
    assert plan.num_heads_removed == 4 and plan.num_removed == 256
    assert smaller.count_params() == plan.num_parameters_after
    assert "held-out perplexity" in capsys.readouterr().out

    model, smaller, plan = prune_heads_shakespeare.main(
        ["--model", "gemma3", "--epochs", "1", "--num-train", "128",
         "--num-val", "8", "--fine-tune-epochs", "1"]
    )
    assert type(smaller) is type(model)
    config = smaller.backbone.get_config()
    assert (config["num_query_heads"], config["num_key_value_heads"]) == (2, 1)
    assert config["intermediate_dim"] == 128
    assert plan.num_heads_removed == 4 and plan.num_units_removed == 256
    assert smaller.count_params() == plan.num_parameters_after
    assert "Gemma3CausalLM: parameters" in capsys.readouterr().out


def test_transposed_convolution_filters_are_pruned_along_their_axis():
    inputs = keras.Input((4, 4, 2))
    x = L.Conv2DTranspose(8, 3, strides=2, padding="same", name="up")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    outputs = L.Conv2D(3, 1, name="out")(L.ReLU()(x))
    model = keras.Model(inputs, outputs)
    x, y = data(model)
    pruned = one_step(sparsity.prune_channels(model, HALF), x, y)
    kernel = model.get_layer("up").get_weights()[0]  # (3, 3, 8, 2)
    expected = top(np.sqrt((kernel**2).sum((0, 1, 3))), 4)
    mask = masks_of(pruned)[("up", "kernel")]
    np.testing.assert_array_equal(
        np.flatnonzero(mask[0, 0, :, 0]), expected
    )
    stripped = sparsity.strip_pruning(pruned)
    smaller = sparsity.shrink(stripped)
    assert smaller.get_layer("up").filters == 4
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(smaller(x, training=False)),
        keras.ops.convert_to_numpy(stripped(x, training=False)),
        atol=1e-4, rtol=1e-4,
    )
