"""Prunes a trained character transformer in one shot, without retraining.

A small GPT-style model (token and position embeddings, pre-norm blocks of
causal self-attention and a GELU feed-forward, a Dense head) is trained on
tiny Shakespeare, then pruned with `keras_sparsity.oneshot.prune` at 50 %,
60 %, 70 % and 2:4 with magnitude, Wanda and SparseGPT (and OWL-allocated
Wanda at 70 %), each from `--num-calibration` training windows. Every
pruned copy is scored by held-out perplexity (`oneshot.perplexity`, on the
last 10 % of the text). Only the attention and feed-forward kernels are
pruned (the embeddings and the head stay dense, as in the papers).

Usage (from the repository root):

    KERAS_BACKEND=tensorflow .venv/bin/python examples/oneshot_shakespeare.py
    KERAS_BACKEND=jax .venv/bin/python examples/oneshot_shakespeare.py \
        --epochs 1 --num-train 2000 --text /path/to/text.txt
"""

import argparse
import os
import time

import keras
import numpy as np
from datasets import load_text

from keras_sparsity import oneshot

DEFAULT_TEXT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    os.pardir,
    os.pardir,
    "shared",
    "data",
    "tinyshakespeare.txt",
)
# Attention and feed-forward kernels; not the embeddings or the head.
BLOCK_LAYERS = r"^block_\d+_(attention|up|down)"


def build_char_transformer(
    vocabulary_size, seq_len, dim=64, num_blocks=2, num_heads=4
):
    """A pre-norm causal transformer over characters: ids -> logits.

    Example: `model = build_char_transformer(65, 64)`
    """
    layers = keras.layers
    ids = keras.Input((None,), dtype="int32", name="characters")
    x = layers.Embedding(vocabulary_size, dim, name="token_embedding")(ids)
    position_ids = keras.ops.cumsum(keras.ops.ones_like(ids), axis=1) - 1
    positions = layers.Embedding(seq_len, dim, name="position_embedding")(
        position_ids
    )
    x = x + positions
    for block in range(num_blocks):
        h = layers.LayerNormalization(name=f"block_{block}_norm_1")(x)
        h = layers.MultiHeadAttention(
            num_heads, dim // num_heads, name=f"block_{block}_attention"
        )(h, h, use_causal_mask=True)
        x = x + h
        h = layers.LayerNormalization(name=f"block_{block}_norm_2")(x)
        h = layers.Dense(4 * dim, activation="gelu", name=f"block_{block}_up")(
            h
        )
        x = x + layers.Dense(dim, name=f"block_{block}_down")(h)
    x = layers.LayerNormalization(name="final_norm")(x)
    logits = layers.Dense(vocabulary_size, name="head")(x)
    return keras.Model(ids, logits, name="char_transformer")


SETTINGS = (
    ("50%", 0.5, None),
    ("60%", 0.6, None),
    ("70%", 0.7, None),
    ("2:4", 0.5, (2, 4)),
)
METHODS = ("magnitude", "wanda", "sparsegpt")


def load_splits(path, seq_len, num_train, num_val, num_calibration):
    """Training windows, held-out sequences and calibration batches.

    Returns `(x_train, y_train), held_out, calibration, vocabulary`:
    `num_train` shuffled training windows, `num_val` held-out sequences of
    `seq_len + 1` ids from the last 10 % of the text (for
    `oneshot.perplexity`), and the first `num_calibration` training
    windows in batches of 16.

    Example: `(x, y), held_out, batches, vocab = load_splits(path, 64, ...)`
    """
    (x_train, y_train), (x_val, y_val), vocabulary = load_text(path, seq_len)
    order = np.random.default_rng(0).permutation(len(x_train))
    x_train, y_train = x_train[order[:num_train]], y_train[order[:num_train]]
    held_out = np.concatenate([x_val[:num_val], y_val[:num_val, -1:]], axis=1)
    calibration = [
        x_train[start : start + 16] for start in range(0, num_calibration, 16)
    ]
    return (x_train, y_train), held_out, calibration, vocabulary


def train_char_transformer(vocabulary_size, seq_len, x, y, epochs, **kwargs):
    """`build_char_transformer(vocabulary_size, seq_len, **kwargs)` trained
    with Adam (3e-3), batch 64, for `epochs` on windows `x` -> `y`.

    Example: `model = train_char_transformer(65, 64, x, y, epochs=3)`
    """
    model = build_char_transformer(vocabulary_size, seq_len, **kwargs)
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=2)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-val", type=int, default=256)
    parser.add_argument("--num-calibration", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[label for label, _, _ in SETTINGS],
        choices=[label for label, _, _ in SETTINGS],
    )
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    (x_train, y_train), held_out, calibration, vocabulary = load_splits(
        args.text,
        args.seq_len,
        args.num_train,
        args.num_val,
        args.num_calibration,
    )
    model = train_char_transformer(
        len(vocabulary), args.seq_len, x_train, y_train, args.epochs
    )
    dense = oneshot.perplexity(model, held_out)
    print(f"dense perplexity {dense:.3f} ({keras.backend.backend()})")

    settings = [s for s in SETTINGS if s[0] in args.settings]
    print(f"{'sparsity':>8} {'method':>10} {'perplexity':>10} {'seconds':>8}")
    for label, target, m_by_n in settings:
        for method in METHODS:
            start = time.perf_counter()
            pruned = oneshot.prune(
                model,
                calibration,
                method=method,
                sparsity=target,
                sparsity_m_by_n=m_by_n,
                layers=BLOCK_LAYERS,
            )
            seconds = time.perf_counter() - start
            score = oneshot.perplexity(pruned, held_out)
            print(f"{label:>8} {method:>10} {score:>10.3f} {seconds:>8.1f}")
    pruned = oneshot.prune(
        model, calibration, sparsity=0.7, layers=BLOCK_LAYERS, allocation="owl"
    )
    score = oneshot.perplexity(pruned, held_out)
    print(f"{'70%':>8} {'wanda+owl':>10} {score:>10.3f}")


if __name__ == "__main__":
    main()
