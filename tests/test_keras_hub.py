"""KerasHub backbones and a causal LM, built from small configs, pruned.

Every attention and feed-forward kernel is pruned (they sit inside the
transformer blocks, custom layers of a functional subclass); the pruned
model keeps its class, its methods (`generate()`) and its tied embedding;
strip, save and load give a plain KerasHub model.
"""

import hub_models  # a broken KerasHub install fails the suite
import keras
import numpy as np
import pytest
from conftest import assert_weights_follow_masks
from conftest import to_numpy

import keras_sparsity as sparsity

HALF = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)
# Kernels per transformer block: query, key, value, attention output and
# the feed-forward projections (2, or 3 where gated).
KERNELS_PER_BLOCK = {"gpt2": 6, "bert": 6, "gemma": 7, "gemma3": 7, "llama": 7}
NUM_BLOCKS = 2


def outputs(model, batch):
    result = model(batch)
    if isinstance(result, dict):
        result = result["sequence_output"]
    return to_numpy(result)


def block_kernels(model):
    """Paths of the pruned kernels inside the transformer blocks."""
    return sorted(
        weight.path
        for wrapper in sparsity.walk.pruning_wrappers(model)
        for weight in wrapper.pruned_weights
        if "embedding" not in weight.path and "pooled" not in weight.path
    )


@pytest.mark.parametrize("name", sorted(hub_models.BACKBONES))
def test_backbone_is_pruned_in_every_block_and_keeps_its_class(name):
    build, make_inputs = hub_models.BACKBONES[name]
    model = build()
    batch = make_inputs()
    before = outputs(model, batch)
    pruned = sparsity.prune_low_magnitude(model, HALF)
    assert type(pruned) is type(model)
    kernels = block_kernels(pruned)
    assert len(kernels) == KERNELS_PER_BLOCK[name] * NUM_BLOCKS
    np.testing.assert_allclose(outputs(pruned, batch), before, atol=1e-5)

    pruned.compile("adam", "mse")
    target = np.zeros_like(before)
    if name == "bert":
        target = {"sequence_output": target, "pooled_output": target[:, 0]}
    pruned.fit(batch, target, batch_size=2, epochs=1, verbose=0)
    assert_weights_follow_masks(pruned)
    for wrapper in sparsity.walk.pruning_wrappers(pruned):
        for weight in wrapper.pruned_weights:
            size = int(np.prod(weight.shape))
            assert np.count_nonzero(to_numpy(weight)) == round(size / 2)

    np.testing.assert_allclose(outputs(model, batch), before)  # untouched
    stripped = sparsity.strip_pruning(pruned)
    assert type(stripped) is type(model)
    assert not sparsity.walk.pruning_wrappers(stripped)
    np.testing.assert_allclose(
        outputs(stripped, batch), outputs(pruned, batch), atol=1e-5
    )


def test_causal_lm_generates_and_its_stripped_file_loads(tmp_path):
    lm = hub_models.gpt2_causal_lm()
    pruned = sparsity.prune_low_magnitude(lm, HALF)
    assert type(pruned) is type(lm)
    # The output projection is the token embedding, one pruned layer.
    embedding = pruned.backbone.token_embedding
    assert isinstance(embedding, sparsity.PruneLowMagnitude)
    assert len(block_kernels(pruned)) == 12
    pruned.compile(sampler="greedy")
    assert isinstance(pruned.optimizer, sparsity.SparsityOptimizer)
    # Preprocessed eagerly: KerasHub maps its preprocessor in tf.data,
    # where the pure-Python tokenizer (no tensorflow-text) cannot run.
    x, y, sample_weight = pruned.preprocessor(["a b c d", "e f g h"])
    keras.Model.fit(pruned, x, y, sample_weight=sample_weight, verbose=0)
    assert_weights_follow_masks(pruned)
    text = pruned.generate("a b", max_length=8)
    assert isinstance(text, str) and text.startswith("a b")

    stripped = sparsity.strip_pruning(pruned)
    stripped.compile(sampler="greedy")
    assert stripped.generate("a b", max_length=8) == text
    path = tmp_path / "lm.keras"
    stripped.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(lm)
    loaded.compile(sampler="greedy")
    assert loaded.generate("a b", max_length=8) == text
    kernel = loaded.backbone.transformer_layers[0]._feedforward_output_dense
    assert np.count_nonzero(to_numpy(kernel.kernel)) == 64 * 32 // 2


def test_backbone_pruned_and_stripped_in_place():
    model = hub_models.gemma_backbone()
    batch = hub_models.gemma_inputs()
    before = outputs(model, batch)
    pruned = sparsity.prune_low_magnitude(model, HALF, inplace=True)
    assert pruned is model
    assert len(block_kernels(model)) == 14
    pruned.compile("adam", "mse")
    pruned.fit(batch, np.zeros_like(before), batch_size=2, verbose=0)
    assert_weights_follow_masks(model)
    pruned_outputs = outputs(model, batch)
    stripped = sparsity.strip_pruning(model, inplace=True)
    assert stripped is model and not sparsity.walk.pruning_wrappers(model)
    np.testing.assert_allclose(outputs(model, batch), pruned_outputs, atol=1e-6)


def test_backbone_with_erk_movement_and_embeddings_left_dense():
    model = hub_models.gpt2_backbone()
    batch = hub_models.gpt2_inputs()
    before = outputs(model, batch)
    pruned = sparsity.prune_low_magnitude(
        model,
        sparsity.ConstantSparsity(0.6, begin_step=0, frequency=1),
        allocation="erk",
        criterion="movement",
        overrides={".*embedding.*": None, "transformer_layer_1/.*": 0.9},
    )
    paths = [
        weight.path
        for wrapper in sparsity.walk.pruning_wrappers(pruned)
        for weight in wrapper.pruned_weights
    ]
    assert paths and not any("embedding" in p for p in paths)
    pruned.compile("adam", "mse")
    pruned.fit(batch, np.zeros_like(before), batch_size=2, verbose=0)
    assert_weights_follow_masks(pruned)
    counts = {}
    for wrapper in sparsity.walk.pruning_wrappers(pruned):
        for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
            counts[weight.path] = (
                int(to_numpy(mask).sum()),
                int(np.prod(weight.shape)),
            )
    for path, (kept, size) in counts.items():
        if path.startswith("transformer_layer_1/"):
            assert kept == sparsity.allocation.keep_count(size, 0.9), path
    # The token embedding (64 x 32) stays dense but counts in the target.
    total = sum(size for _, size in counts.values()) + 64 * 32
    kept = sum(kept for kept, _ in counts.values()) + 64 * 32
    assert kept == sparsity.allocation.keep_count(total, 0.6)
