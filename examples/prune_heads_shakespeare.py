"""Removes attention heads and feed-forward units from a character
transformer: `prune_channels` while fine-tuning, then `shrink`.

The small GPT-style model of `oneshot_shakespeare.py` (two pre-norm blocks
of 4-head causal self-attention and a GELU feed-forward of 256 units) is
trained on tiny Shakespeare, then fine-tuned while `prune_channels` ranks
each attention layer's heads and each feed-forward layer's units by the L2
norm of their weights and zeroes the weakest, ramping to `--sparsity`.
`strip_pruning` and `shrink` then rebuild it with fewer heads and units: a
smaller dense model that every runtime runs faster. Printed: the shrink
plan, parameters, held-out perplexity before and after, and the time of a
forward pass of both models.

With `--model gemma3` the same is done to a KerasHub `Gemma3CausalLM`
built from a small config: its grouped key/value heads go with their query
heads, and the result is still a `Gemma3CausalLM`.

Usage (from the repository root):

    KERAS_BACKEND=jax .venv/bin/python examples/prune_heads_shakespeare.py
    KERAS_BACKEND=jax .venv/bin/python examples/prune_heads_shakespeare.py \
        --model gemma3
    KERAS_BACKEND=torch .venv/bin/python examples/prune_heads_shakespeare.py \
        --epochs 1 --num-train 2000 --sparsity 0.25
"""

import argparse
import time

import keras
import numpy as np
from oneshot_shakespeare import DEFAULT_TEXT
from oneshot_shakespeare import load_splits
from oneshot_shakespeare import train_char_transformer

import keras_sparsity as sparsity
from keras_sparsity import oneshot


def forward_seconds(model, x, repeats=5):
    """Median seconds of `predict_on_batch` (Keras' own, also for a KerasHub
    task) of `model` on `x`, after a warm-up."""
    keras.Model.predict_on_batch(model, x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.Model.predict_on_batch(model, x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def gemma3_lm(vocabulary_size):
    """A KerasHub `Gemma3CausalLM` from a small config (no download): two
    blocks, 4 query and 2 key/value heads of 16, feed-forward 256; the
    character ids are its tokens, so it needs no preprocessor."""
    import keras_hub

    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=vocabulary_size, image_size=16, num_layers=2,
        num_query_heads=4, num_key_value_heads=2, hidden_dim=64,
        intermediate_dim=256, head_dim=16,
    )
    return keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=None)


def as_tokens(ids):
    """A KerasHub causal LM's input: token ids and a full padding mask."""
    return {"token_ids": ids.astype("int32"),
            "padding_mask": np.ones_like(ids, "int32")}


def compile_for_ids(model, learning_rate):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--model", choices=("functional", "gemma3"),
                        default="functional")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-val", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args(argv)

    (x, y), held_out, _, vocabulary = load_splits(
        args.text, args.seq_len, args.num_train, args.num_val, 16
    )
    if args.model == "gemma3":
        # KerasHub tasks train through `keras.Model.fit` here: their own
        # `fit` maps a preprocessor, which token ids do not need.
        model, inputs, fit = gemma3_lm(len(vocabulary)), as_tokens, (
            keras.Model.fit
        )
        compile_for_ids(model, 3e-3)
        fit(model, inputs(x), y, batch_size=64, epochs=args.epochs,
            verbose=2)
    else:
        model, inputs, fit = train_char_transformer(
            len(vocabulary), args.seq_len, x, y, args.epochs
        ), (lambda ids: ids), keras.Model.fit
    dense_perplexity = oneshot.perplexity(model, held_out)

    steps = args.fine_tune_epochs * -(-len(x) // 64)
    schedule = sparsity.PolynomialDecay(
        0.0, args.sparsity, begin_step=0, end_step=max(1, steps // 2),
        frequency=max(1, steps // 10),
    )
    pruned = sparsity.prune_channels(model, schedule, importance="l2")
    compile_for_ids(pruned, 1e-3)
    fit(pruned, inputs(x), y, batch_size=64, epochs=args.fine_tune_epochs,
        verbose=2)
    smaller, plan = sparsity.shrink(
        sparsity.strip_pruning(pruned), return_plan=True
    )
    print(plan)
    batch = inputs(x[:32])
    print(
        f"{type(smaller).__name__}: parameters {model.count_params():,} -> "
        f"{smaller.count_params():,}; held-out perplexity "
        f"{dense_perplexity:.3f} -> {oneshot.perplexity(smaller, held_out):.3f}"
        f"; forward pass (batch 32) {forward_seconds(model, batch) * 1e3:.1f}"
        f" -> {forward_seconds(smaller, batch) * 1e3:.1f} ms"
    )
    return model, smaller, plan


if __name__ == "__main__":
    main()
