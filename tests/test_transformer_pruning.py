"""Attention heads and feed-forward units of transformer layers: pruned
by `prune_channels` inside KerasHub backbones and Keras attention layers,
then cut by `shrink`, the model keeping its class."""

import hub_models
import keras
import numpy as np
import pytest
from conftest import built_subclassed
from conftest import to_numpy

import keras_sparsity as sparsity
from keras_sparsity.structural import PruneChannels
from keras_sparsity.structural import transformers

L = keras.layers
HALF = sparsity.ConstantSparsity(0.5, begin_step=0)


def outputs(model, batch):
    result = model(batch)
    if isinstance(result, dict):
        result = result["sequence_output"]
    return to_numpy(result)


def one_step(pruned, batch, **compile_kwargs):
    """One update with learning rate 0: the masks of the initial weights."""
    pruned.compile(keras.optimizers.SGD(0.0), "mse", **compile_kwargs)
    target = keras.tree.map_structure(to_numpy, pruned(batch))
    pruned.fit(batch, target, batch_size=2, epochs=1, verbose=0)
    return pruned


def top(scores, count):
    order = np.lexsort((np.arange(len(scores)), -scores))
    return np.sort(order[:count])


def kernel(block, projection):
    return to_numpy(transformers.resolve(block, projection.path).kernel)


def along(array, axis):
    """Sum of squares per index along `axis`."""
    squares = np.moveaxis(array, axis, 0) ** 2
    return squares.reshape(array.shape[axis], -1).sum(1)


def expected_heads(block, attention):
    """L2 importance of each key/value head (its value columns and its
    query heads' output rows) or, with one key/value head, of each query
    head (query columns and output rows), in NumPy."""
    source = attention.query if attention.by_query else attention.value
    first = along(kernel(block, source), source.axis)
    output = along(kernel(block, attention.output), attention.output.axis)
    scores = np.sqrt(
        first + output.reshape(-1, attention.unit_repeat).sum(1)
    )
    return top(scores, round(attention.num_units / 2))


def expected_units(block, ffn):
    scores = sum(along(kernel(block, p), p.axis) for p in ffn.inputs)
    scores = np.sqrt(scores + along(kernel(block, ffn.output), ffn.output.axis))
    return top(scores, ffn.units // 2)


def live(indices, size):
    return np.setdiff1d(np.arange(size), indices)


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama", "gemma3"])
def test_keras_hub_heads_and_units_match_numpy_then_shrink(name, tmp_path):
    """Every block loses half its key/value heads (with their query heads)
    and half its feed-forward units, chosen as NumPy ranks them; `shrink`
    cuts the units everywhere, and the heads where the config can say so
    (Gemma 3: an explicit `head_dim`)."""
    build, inputs = hub_models.BACKBONES[name]
    model, batch = build(), inputs()
    before = outputs(model, batch)
    pruned = one_step(sparsity.prune_channels(model, HALF), batch)
    assert type(pruned) is type(model)
    np.testing.assert_array_equal(outputs(model, batch), before)  # untouched

    stripped = sparsity.strip_pruning(pruned)
    for original, wrapper, block in zip(
        model.transformer_layers, pruned.transformer_layers,
        stripped.transformer_layers,
    ):
        assert isinstance(wrapper, PruneChannels)
        (attention,) = transformers.attentions(original)
        ffn = transformers.feed_forward(original)
        np.testing.assert_array_equal(
            live(transformers.silent_heads(block, attention),
                 attention.num_units),
            expected_heads(original, attention),
        )
        np.testing.assert_array_equal(
            live(transformers.silent_units(block, ffn), ffn.units),
            expected_units(original, ffn),
        )

    smaller, plan = sparsity.shrink(stripped, return_plan=True)
    assert type(smaller) is type(model)
    np.testing.assert_allclose(
        outputs(smaller, batch), outputs(stripped, batch), atol=2e-5
    )
    assert smaller.count_params() == plan.num_parameters_after
    config = model.get_config()
    assert smaller.get_config()["intermediate_dim"] == (
        config["intermediate_dim"] // 2
    )
    assert plan.num_units_removed == 2 * ffn.units // 2
    if name == "gemma3":
        assert smaller.get_config()["num_key_value_heads"] == 1
        assert smaller.get_config()["num_query_heads"] == 2
        assert plan.num_heads_removed == 2 * 2
    else:
        assert plan.num_heads_removed == 0
        heads = [g for g in plan.groups if g.unit == "heads"]
        assert all("head size" in g.reasons[-1] for g in heads)
    path = tmp_path / "smaller.keras"
    smaller.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(
        outputs(loaded, batch), outputs(smaller, batch), atol=1e-6
    )


def test_causal_lm_generates_the_same_text_once_shrunk(tmp_path):
    lm = hub_models.gpt2_causal_lm()
    pruned = sparsity.prune_channels(lm, HALF, importance="taylor")
    assert type(pruned) is type(lm)
    pruned.compile(sampler="greedy")
    # Preprocessed eagerly: tf.data cannot run the pure-Python tokenizer.
    x, y, sample_weight = pruned.preprocessor(["a b c d", "e f g h"])
    keras.Model.fit(pruned, x, y, sample_weight=sample_weight, verbose=0)
    text = pruned.generate("a b", max_length=8)

    smaller, plan = sparsity.shrink(pruned, return_plan=True)
    assert type(smaller) is type(lm)
    assert plan.num_units_removed == 2 * 32
    smaller.compile(sampler="greedy")
    assert smaller.generate("a b", max_length=8) == text
    path = tmp_path / "lm.keras"
    smaller.save(path)
    loaded = keras.saving.load_model(path)
    loaded.compile(sampler="greedy")
    assert loaded.generate("a b", max_length=8) == text
    assert loaded.backbone.get_config()["intermediate_dim"] == 32


def test_layers_of_one_config_keep_as_many_units_as_the_least_pruned():
    """A backbone's config has one `intermediate_dim`: a block with more
    silent units keeps some of them, and the outputs do not change."""
    model, batch = hub_models.gpt2_backbone(), hub_models.gpt2_inputs()
    for block, silent in zip(model.transformer_layers, (40, 20)):
        dense = block._feedforward_output_dense
        kernel = to_numpy(dense.kernel)
        kernel[np.arange(silent) * 64 // silent] = 0.0  # spread out
        dense.kernel.assign(kernel)
    smaller, plan = sparsity.shrink(model, return_plan=True)
    units = [g for g in plan.groups if g.unit == "units"]
    assert [g.num_kept for g in units] == [44, 44]
    assert "20 silent kept" in units[0].reasons[0]
    assert units[1].reasons == ()
    assert smaller.get_config()["intermediate_dim"] == 44
    np.testing.assert_allclose(
        outputs(smaller, batch), outputs(model, batch), atol=2e-5
    )


def test_multi_query_attention_loses_query_heads_one_by_one(tmp_path):
    """Gemma's one key/value head serves every query head: the query heads
    go one by one (their query columns and output rows), the key/value
    head stays."""
    model, batch = hub_models.gemma_backbone(), hub_models.gemma_inputs()
    pruned = one_step(sparsity.prune_channels(model, HALF), batch)
    stripped = sparsity.strip_pruning(pruned)
    for original, block in zip(
        model.transformer_layers, stripped.transformer_layers
    ):
        (attention,) = transformers.attentions(original)
        assert attention.by_query and attention.num_units == 4
        np.testing.assert_array_equal(
            live(transformers.silent_heads(block, attention), 4),
            expected_heads(original, attention),
        )
    smaller, plan = sparsity.shrink(stripped, return_plan=True)
    heads = [g for g in plan.groups if g.unit == "heads"]
    assert [g.num_kept for g in heads] == [2, 2]
    config = smaller.get_config()
    assert (config["num_query_heads"], config["num_key_value_heads"]) == (2, 1)
    np.testing.assert_allclose(
        outputs(smaller, batch), outputs(stripped, batch), atol=2e-5
    )
    path = tmp_path / "gemma.keras"
    smaller.save(path)
    np.testing.assert_allclose(
        outputs(keras.saving.load_model(path), batch),
        outputs(smaller, batch), atol=1e-6,
    )


def grouped_attention_model(use_gate=False):
    inputs = keras.Input((5, 16))
    x = L.Dense(16, name="embed")(inputs)
    a = L.GroupQueryAttention(
        4, 4, 2, use_gate=use_gate, name="gqa"
    )(x, x)
    x = L.Add()([x, a])
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("use_gate", [False, True])
def test_grouped_query_attention_loses_key_value_heads_with_their_queries(
    use_gate, tmp_path
):
    model = grouped_attention_model(use_gate)
    x = np.random.RandomState(0).normal(size=(4, 5, 16)).astype("float32")
    pruned = sparsity.prune_channels(model, HALF)
    pruned.compile(keras.optimizers.SGD(0.0), "mse")
    pruned.fit(x, np.zeros((4, 3), "float32"), batch_size=4, verbose=0)
    gqa = model.get_layer("gqa")
    (attention,) = transformers.attentions(gqa)
    kept = expected_heads(gqa, attention)
    stripped = sparsity.strip_pruning(pruned)
    np.testing.assert_array_equal(
        live(transformers.silent_heads(stripped.get_layer("gqa"), attention),
             2),
        kept,
    )
    smaller, plan = sparsity.shrink(stripped, return_plan=True)
    cut = smaller.get_layer("gqa")
    assert (cut.num_query_heads, cut.num_key_value_heads) == (2, 1)
    (heads,) = [g for g in plan.groups if g.unit == "heads"]
    assert heads.kept == (2 * kept[0], 2 * kept[0] + 1)
    np.testing.assert_allclose(
        to_numpy(smaller(x)), to_numpy(stripped(x)), atol=2e-5
    )
    path = tmp_path / "gqa.keras"
    smaller.save(path)
    np.testing.assert_allclose(
        to_numpy(keras.saving.load_model(path)(x)), to_numpy(smaller(x)),
        atol=1e-6,
    )


def test_compiled_training_prunes_grouped_query_heads():
    """XLA on TensorFlow, torch.compile on PyTorch (JAX always jits). A
    KerasHub Llama on TensorFlow; Keras' GroupQueryAttention on PyTorch,
    where compiling the Llama train step alone takes two minutes."""
    if keras.backend.backend() == "torch":
        model = grouped_attention_model()
        batch = np.random.RandomState(0).normal(size=(2, 5, 16))
        batch = batch.astype("float32")
        originals = [model.get_layer("gqa")]
    else:
        model, batch = hub_models.llama_backbone(), hub_models.llama_inputs()
        originals = model.transformer_layers
    pruned = one_step(
        sparsity.prune_channels(model, HALF), batch, jit_compile=True
    )
    stripped = sparsity.strip_pruning(pruned)
    for original in originals:
        block = stripped.get_layer(original.name)
        (attention,) = transformers.attentions(original)
        np.testing.assert_array_equal(
            live(transformers.silent_heads(block, attention), 2),
            expected_heads(original, attention),
        )


def test_models_without_heads_or_graph_are_refused():
    model = built_subclassed(4, 3)
    with pytest.raises(ValueError, match="no heads or feed-forward units"):
        sparsity.prune_channels(model, HALF)
    with pytest.raises(ValueError, match="Sequential or functional"):
        sparsity.shrink(model)
    backbone = hub_models.gpt2_backbone()
    with pytest.raises(ValueError, match="no heads or feed-forward units"):
        sparsity.prune_channels(backbone, HALF, importance="bn_gamma")
