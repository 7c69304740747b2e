"""Prunes a small CNN on scikit-learn's 8x8 digits to 80% sparsity.

The TFMOT workflow end to end on any Keras backend: train a dense model,
wrap it with `prune_low_magnitude` under a `PolynomialDecay` schedule
(50% -> 80% of each kernel zeroed), fine-tune, `strip_pruning`, then compare
test accuracy and the size of each saved `.keras` file once compressed with
zip/deflate (how TFMOT's pruning tutorial measures the gain).

Usage:

    make demo
    KERAS_BACKEND=torch .venv/bin/python examples/demo_digits.py \
        --epochs 4 --out-dir out/

`--epochs` is used for the dense training and again for the fine-tuning;
sparsity reaches 80% at the end of fine-tuning epoch `min(2, epochs)`. The
data ship with scikit-learn, so nothing is downloaded.
"""

import argparse
import math
import os
import tempfile
import zipfile

import keras
import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_sparsity as sparsity

BATCH_SIZE = 32
NUM_TEST = 360
INITIAL_SPARSITY = 0.5
FINAL_SPARSITY = 0.8
PRUNING_FREQUENCY = 10
MAX_PRUNING_EPOCHS = 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="epochs of dense training, and again of pruned fine-tuning",
    )
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where the .keras and .zip files go (default: a temporary "
        "directory)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1. Received: --epochs={args.epochs}")
    return args


def load_data():
    """(x_train, y_train, x_test, y_test): 1437 / 360 images in [0, 1]."""
    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    labels = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=NUM_TEST, random_state=0, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def build_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(
        16, 3, activation="relu", padding="same", name="conv_1"
    )(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(
        32, 3, activation="relu", padding="same", name="conv_2"
    )(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense_1")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model, x, y):
    """Fraction of `x` classified as `y` (needs no compiled model)."""
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def pruning_schedule(num_train, epochs):
    """Ramps 50% -> 80% sparsity over the first `min(2, epochs)` epochs.

    The schedule counts optimizer steps from 0, so the last step of epoch
    `e` is step `e * steps_per_epoch - 1`: making that `end_step` puts the
    final mask update inside the fine-tuning.
    """
    steps_per_epoch = math.ceil(num_train / BATCH_SIZE)
    end_step = min(MAX_PRUNING_EPOCHS, epochs) * steps_per_epoch - 1
    return sparsity.PolynomialDecay(
        initial_sparsity=INITIAL_SPARSITY,
        final_sparsity=FINAL_SPARSITY,
        begin_step=0,
        end_step=end_step,
        frequency=PRUNING_FREQUENCY,
    )


def prune_and_fine_tune(model, x, y, epochs):
    """Returns the pruned, fine-tuned and stripped copy of `model`."""
    schedule = pruning_schedule(len(x), epochs)
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    compile_model(pruned)
    pruned.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        callbacks=[sparsity.UpdatePruningStep()],
        verbose=0,
    )
    steps = int(keras.ops.convert_to_numpy(pruned.optimizer.iterations))
    if steps <= schedule.end_step:
        raise RuntimeError(
            f"Fine-tuning ran {steps} optimizer steps, too few to reach the "
            f"schedule's end_step={schedule.end_step}."
        )
    return sparsity.strip_pruning(pruned)


def without_optimizer(model):
    """An uncompiled copy of `model` holding its weights.

    A compiled model's `.keras` file also stores the optimizer's slots
    (twice the weights for Adam); TFMOT's tutorial saves the baseline with
    `include_optimizer=False`, which `.keras` files do not support.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def save_and_compress(model, out_dir, name):
    """Saves `model` as `<name>.keras`; returns (path, deflated zip size)."""
    path = os.path.join(out_dir, f"{name}.keras")
    model.save(path)
    zipped = os.path.join(out_dir, f"{name}.zip")
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as f:
        f.write(path, arcname=os.path.basename(path))
    return path, os.path.getsize(zipped)


def sparsity_rows(model):
    """(layer, weight, shape, size, non-zeros) for each weight of rank >= 2."""
    rows = []
    for layer in model.layers:
        for weight in layer.weights:
            if len(weight.shape) < 2:
                continue
            value = keras.ops.convert_to_numpy(weight)
            rows.append(
                (
                    layer.name,
                    weight.name,
                    tuple(weight.shape),
                    value.size,
                    int(np.count_nonzero(value)),
                )
            )
    return rows


def sparsity_table(rows):
    table = Table(title="Stripped model: weights of rank >= 2")
    table.add_column("Layer")
    table.add_column("Weight")
    table.add_column("Shape")
    table.add_column("Parameters", justify="right")
    table.add_column("Non-zeros", justify="right")
    table.add_column("Sparsity", justify="right")

    def add(layer, weight, shape, size, nonzeros, **kwargs):
        table.add_row(
            layer,
            weight,
            shape,
            f"{size:,}",
            f"{nonzeros:,}",
            f"{1 - nonzeros / size:.2%}",
            **kwargs,
        )

    for layer, weight, shape, size, nonzeros in rows:
        add(layer, weight, str(shape), size, nonzeros)
    table.add_section()
    add(
        "Total",
        "",
        "",
        sum(row[3] for row in rows),
        sum(row[4] for row in rows),
        style="bold",
    )
    return table


def main(argv=None):
    args = parse_args(argv)
    console = Console()
    backend = keras.backend.backend()
    console.print(f"Keras backend: {backend}")
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load_data()

    model = build_model()
    compile_model(model)
    model.fit(
        x_train, y_train, batch_size=BATCH_SIZE, epochs=args.epochs, verbose=0
    )
    dense_accuracy = accuracy(model, x_test, y_test)
    stripped = prune_and_fine_tune(model, x_train, y_train, args.epochs)
    pruned_accuracy = accuracy(stripped, x_test, y_test)

    out_dir = args.out_dir or tempfile.mkdtemp(prefix="demo_digits_")
    os.makedirs(out_dir, exist_ok=True)
    dense_path, dense_size = save_and_compress(
        without_optimizer(model), out_dir, "digits_dense"
    )
    pruned_path, pruned_size = save_and_compress(
        stripped, out_dir, "digits_pruned"
    )

    console.print(sparsity_table(sparsity_rows(stripped)))
    console.print(
        f"Test accuracy: dense {dense_accuracy:.2%}, "
        f"pruned {pruned_accuracy:.2%}",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"Zipped .keras size: dense {dense_size:,} bytes, "
        f"pruned {pruned_size:,} bytes "
        f"({dense_size / pruned_size:.2f}x smaller)",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"Saved: {dense_path}, {pruned_path}",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )


if __name__ == "__main__":
    main()
