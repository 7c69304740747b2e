"""Prunes a character-level LSTM language model on Shakespeare to 80 %.

The LSTM row of TFMOT's pruning overview (a translation model's BLEU at
80 % sparsity) at the scale of a laptop: an Embedding -> LSTM -> Dense
model predicts the next character of tiny Shakespeare. The dense model is
trained first; a copy of it is pruned with `PolynomialDecay(0 -> 0.8)` over
the first half of fine-tuning (every kernel: the embeddings, the LSTM's
kernel and recurrent kernel, the output Dense), fine-tuned, stripped with
`strip_pruning` and evaluated. Both are scored on the held-out last 10 %
of the text: character accuracy (the most likely next character is the
right one) and perplexity (`exp` of the mean cross-entropy per character).
Batch 64, Adam with learning rate 1e-2.

Usage (from the repository root):

    KERAS_BACKEND=jax .venv/bin/python examples/lstm_shakespeare.py
    KERAS_BACKEND=tensorflow .venv/bin/python examples/lstm_shakespeare.py \
        --epochs 2 --fine-tune-epochs 2 --units 128 --text /path/to/text.txt

`--text` is any UTF-8 text file; by default
`../shared/data/tinyshakespeare.txt`. `--num-train` windows of
`--seq-len` characters, drawn with a fixed seed from the first 90 % of the
text, are the training set; an epoch is one pass over them.
"""

import argparse
import math
import os
import time

import keras
import numpy as np
from datasets import load_text

import keras_sparsity as sparsity

DEFAULT_TEXT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    os.pardir,
    os.pardir,
    "shared",
    "data",
    "tinyshakespeare.txt",
)
BATCH_SIZE = 64
LEARNING_RATE = 1e-2
TARGET_SPARSITY = 0.8
PRUNING_FREQUENCY = 10
# Sparsity ramps up over this share of the fine-tuning steps.
RAMP_FRACTION = 0.5


def build_char_lstm(keras_module, vocabulary_size, embedding_dim=32, units=128):
    """Embedding -> LSTM (a step per character) -> Dense logits.

    Args:
        keras_module: The Keras module to build with (`keras`, or
            `tf_keras` for a TFMOT run).
        vocabulary_size: Int, the number of distinct characters.
        embedding_dim: Int, the size of a character's embedding.
        units: Int, the LSTM's state size.

    Example: `model = build_char_lstm(keras, 65)`
    """
    layers = keras_module.layers
    inputs = keras_module.Input((None,), dtype="int32", name="characters")
    x = layers.Embedding(vocabulary_size, embedding_dim, name="embedding")(
        inputs
    )
    x = layers.LSTM(units, return_sequences=True, name="lstm")(x)
    outputs = layers.Dense(vocabulary_size, name="logits")(x)
    return keras_module.Model(inputs, outputs, name="char_lstm")


def load_windows(path, seq_len, num_train, num_val, seed=0):
    """Training and validation windows of `path`, and its vocabulary size.

    `num_train` training windows are drawn with `seed` from the first 90 %
    of the text; the first `num_val` windows of the last 10 % validate.
    """
    (x_train, y_train), (x_val, y_val), vocabulary = load_text(path, seq_len)
    if num_train > len(x_train) or num_val > len(x_val):
        raise ValueError(
            f"{path} holds {len(x_train)} training and {len(x_val)} "
            f"validation windows of {seq_len} characters. Received: "
            f"num_train={num_train}, num_val={num_val}"
        )
    chosen = np.random.default_rng(seed).permutation(len(x_train))[:num_train]
    return (
        (x_train[chosen], y_train[chosen]),
        (x_val[:num_val], y_val[:num_val]),
        len(vocabulary),
    )


def train(model, x, y, epochs):
    """Compiles `model` (Adam, cross-entropy from logits) and fits it."""
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)


def evaluate(model, x, y):
    """`(character accuracy, perplexity)` of next-character predictions."""
    logits = model.predict(x, batch_size=256, verbose=0).astype("float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    target_log_probs = np.take_along_axis(log_probs, y[..., None], axis=-1)
    perplexity = float(np.exp(-target_log_probs.mean()))
    return float(np.mean(np.argmax(logits, axis=-1) == y)), perplexity


def prune_and_fine_tune(model, x, y, epochs, target=TARGET_SPARSITY):
    """Prunes a copy of `model` to `target` while fine-tuning; strips it.

    `PolynomialDecay(0 -> target)` over the first half of the fine-tuning
    steps (masks updated every 10 steps and at `end_step`), then
    fine-tuning at `target`. `model` is not changed.
    """
    num_steps = epochs * math.ceil(len(x) / BATCH_SIZE)
    schedule = sparsity.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=target,
        begin_step=0,
        end_step=max(math.ceil(num_steps * RAMP_FRACTION) - 1, 0),
        frequency=PRUNING_FREQUENCY,
    )
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    train(pruned, x, y, epochs)
    return sparsity.strip_pruning(pruned)


def kernel_counts(model):
    """`{weight path: (size, non-zeros)}` for each weight of rank >= 2.

    Every such weight here is a kernel that `prune_low_magnitude` prunes.
    """
    counts = {}
    for weight in model.weights:
        if len(weight.shape) >= 2:
            value = keras.ops.convert_to_numpy(weight)
            counts[weight.path] = (value.size, int(np.count_nonzero(value)))
    return counts


def run(
    train_data,
    val_data,
    vocabulary_size,
    *,
    epochs,
    fine_tune_epochs,
    embedding_dim=32,
    units=128,
):
    """Trains dense, then prunes a copy; returns a result dict per model.

    Args:
        train_data, val_data: `(x, y)` pairs of character-id windows.
        vocabulary_size: Int, the number of distinct characters.
        epochs: Int >= 1, dense training epochs.
        fine_tune_epochs: Int >= 1, fine-tuning epochs of the pruned copy.
        embedding_dim, units: Ints, passed to `build_char_lstm`.

    Returns:
        `{"dense": ..., "80% sparse": ...}`, each a dict holding
        `accuracy`, `perplexity`, `sparsity` (zeros over all kernels),
        `seconds` (training wall time) and `model`.
    """
    (x_train, y_train), (x_val, y_val) = train_data, val_data
    keras.utils.set_random_seed(0)
    dense = build_char_lstm(keras, vocabulary_size, embedding_dim, units)
    results = {}
    for name in ("dense", f"{TARGET_SPARSITY:.0%} sparse"):
        start = time.perf_counter()
        if name == "dense":
            train(dense, x_train, y_train, epochs)
            model = dense
        else:
            keras.utils.set_random_seed(1)
            model = prune_and_fine_tune(
                dense, x_train, y_train, fine_tune_epochs
            )
        seconds = time.perf_counter() - start
        accuracy, perplexity = evaluate(model, x_val, y_val)
        counts = kernel_counts(model).values()
        nonzeros = sum(nonzero for _, nonzero in counts)
        size = sum(size for size, _ in counts)
        results[name] = {
            "accuracy": accuracy,
            "perplexity": perplexity,
            "sparsity": 1.0 - nonzeros / size,
            "seconds": seconds,
            "model": model,
        }
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument(
        "--epochs", type=int, default=4, help="dense training epochs"
    )
    parser.add_argument(
        "--fine-tune-epochs", type=int, default=4, help="pruned fine-tuning"
    )
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=8192)
    parser.add_argument("--num-val", type=int, default=1024)
    parser.add_argument("--embedding-dim", type=int, default=32)
    parser.add_argument("--units", type=int, default=128)
    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        if name != "text" and value < 1:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} must be >= 1. Received: {flag}={value}")
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f"Keras backend: {keras.backend.backend()}")
    train_data, val_data, vocabulary_size = load_windows(
        args.text, args.seq_len, args.num_train, args.num_val
    )
    results = run(
        train_data,
        val_data,
        vocabulary_size,
        epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        embedding_dim=args.embedding_dim,
        units=args.units,
    )
    print("| model | char accuracy | perplexity | kernel sparsity | time |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        print(
            f"| {name} | {result['accuracy']:.4f} "
            f"| {result['perplexity']:.3f} | {result['sparsity']:.4f} "
            f"| {result['seconds']:.1f} s |"
        )
    print("Sparsity per kernel of the pruned model:")
    pruned = results[f"{TARGET_SPARSITY:.0%} sparse"]["model"]
    for path, (size, nonzeros) in kernel_counts(pruned).items():
        print(f"  {path}: {1 - nonzeros / size:.4f} of {size:,}")

if __name__ == "__main__":
    main()
