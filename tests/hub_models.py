"""Tiny KerasHub models built from small configs, for tests (no presets).

Each `*_backbone()` builds a randomly initialised KerasHub backbone with a
64-token vocabulary, 2 layers, hidden size 32 and 4 heads; keyword
arguments override the config. `*_inputs()` returns a matching batch of
2 sequences of 8 tokens (the second one padded). `gpt2_causal_lm()` wraps
the GPT-2 backbone in a `GPT2CausalLM` whose preprocessor uses the tiny
in-memory BPE vocabulary below, so `generate("a b", max_length=8)` runs
offline.
"""

import string

import keras_hub
import numpy as np

VOCABULARY_SIZE = 64
SEQUENCE_LENGTH = 8
MAX_SEQUENCE_LENGTH = 16

# Byte-level BPE: letters, "Ġ" (the encoded space), "Ġ" + letter, digits and
# GPT-2's end token, 64 tokens in all; merging "Ġ" with a letter is the only
# rule, so "a b" encodes as ["a", "Ġb"].
_LETTERS = string.ascii_lowercase
_TOKENS = [*_LETTERS, "Ġ", *("Ġ" + c for c in _LETTERS), *string.digits]
BPE_VOCABULARY = {t: i for i, t in enumerate([*_TOKENS, "<|endoftext|>"])}
BPE_MERGES = [f"Ġ {c}" for c in _LETTERS]


def _batch(segment_ids=False):
    rng = np.random.default_rng(0)
    padding_mask = np.ones((2, SEQUENCE_LENGTH), dtype="int32")
    padding_mask[1, SEQUENCE_LENGTH // 2 :] = 0
    token_ids = rng.integers(1, VOCABULARY_SIZE, padding_mask.shape)
    batch = {
        "token_ids": (token_ids * padding_mask).astype("int32"),
        "padding_mask": padding_mask,
    }
    if segment_ids:
        segments = np.zeros_like(padding_mask)
        segments[:, SEQUENCE_LENGTH // 4 : SEQUENCE_LENGTH // 2] = 1
        batch["segment_ids"] = segments
    return batch


def gpt2_backbone(**overrides):
    config = dict(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=2,
        num_heads=4,
        hidden_dim=32,
        intermediate_dim=64,
        dropout=0.0,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    return keras_hub.models.GPT2Backbone(**{**config, **overrides})


def bert_backbone(**overrides):
    config = dict(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=2,
        num_heads=4,
        hidden_dim=32,
        intermediate_dim=64,
        dropout=0.0,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    return keras_hub.models.BertBackbone(**{**config, **overrides})


def gemma_backbone(**overrides):
    config = dict(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=1,
        hidden_dim=32,
        intermediate_dim=64,
        head_dim=8,
    )
    return keras_hub.models.GemmaBackbone(**{**config, **overrides})


def gemma3_backbone(**overrides):
    """Text-only Gemma 3 (`vision_encoder=None`; `image_size` is unused)."""
    config = dict(
        vocabulary_size=VOCABULARY_SIZE,
        image_size=16,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        head_dim=8,
    )
    return keras_hub.models.Gemma3Backbone(**{**config, **overrides})


def llama_backbone(**overrides):
    config = dict(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
    )
    return keras_hub.models.LlamaBackbone(**{**config, **overrides})


def gpt2_causal_lm(**overrides):
    """`GPT2CausalLM` on `gpt2_backbone(**overrides)` with the tiny BPE."""
    tokenizer = keras_hub.models.GPT2Tokenizer(
        vocabulary=BPE_VOCABULARY, merges=BPE_MERGES
    )
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer, sequence_length=SEQUENCE_LENGTH
    )
    return keras_hub.models.GPT2CausalLM(
        backbone=gpt2_backbone(**overrides), preprocessor=preprocessor
    )


def gpt2_inputs():
    return _batch()


def bert_inputs():
    return _batch(segment_ids=True)


def gemma_inputs():
    return _batch()


def gemma3_inputs():
    return _batch()


def llama_inputs():
    return _batch()


# Name -> (builder, batch), for parametrised tests.
BACKBONES = {
    "gpt2": (gpt2_backbone, gpt2_inputs),
    "bert": (bert_backbone, bert_inputs),
    "gemma": (gemma_backbone, gemma_inputs),
    "gemma3": (gemma3_backbone, gemma3_inputs),
    "llama": (llama_backbone, llama_inputs),
}
