"""TFMOT's "Pruning in Keras" MNIST example, on any Keras 3 backend.

The recipe of TensorFlow Model Optimization's pruning tutorial with
`keras_sparsity` in place of `tfmot.sparsity.keras`: train the tutorial CNN
(Reshape -> Conv2D(12, 3, relu) -> MaxPooling2D -> Flatten -> Dense(10))
densely, prune the whole model with `PolynomialDecay(0.5 -> 0.8)` while
fine-tuning, `strip_pruning`, then compare test accuracy and the size of
the saved `.keras` files once zipped with DEFLATE (how the tutorial measures
the gain), and the size of `save_compressed`'s file. `--model mlp` runs the
same recipe on a 784-1024-1024-10 MLP.

Usage (from the repository root):

    KERAS_BACKEND=jax .venv/bin/python examples/mnist_cnn.py
    KERAS_BACKEND=torch .venv/bin/python examples/mnist_cnn.py --model mlp \
        --final-sparsity 0.9 --prune-epochs 4 --out-dir out/

MNIST is read in IDX format from `--data-dir` (default
`../shared/data/mnist` beside the repository: the 10,000 t10k images, of
which 8,000 train and 2,000 test, shuffled with a fixed seed). Sparsity
reaches its final value at the last step of the second pruning epoch.

`build_cnn(keras_module)` and `build_mlp(keras_module)` take the Keras
module to build with, so `benchmarks/tfmot_recipe.py` builds the identical
model in Keras 3 and in TFMOT's `tf_keras`; for that reason this script
imports Keras only when it runs.
"""

import argparse
import math
import os
import sys
import tempfile
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from datasets import load_mnist

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(
    os.path.dirname(REPO_ROOT), "shared", "data", "mnist"
)
BATCH_SIZE = 128
INITIAL_SPARSITY = 0.5
RAMP_EPOCHS = 2
SEED = 0


def build_cnn(keras_module):
    """TFMOT's tutorial CNN (20,410 parameters), built with `keras_module`.

    Input(28, 28) -> Reshape(28, 28, 1) -> Conv2D(12, 3, relu) ->
    MaxPooling2D(2) -> Flatten -> Dense(10) logits.

    Args:
        keras_module: The Keras to build with: `keras` (Keras 3) or
            `tf_keras` (Keras 2, for TFMOT).

    Returns:
        An uncompiled, built `Sequential` model.

    Example: `model = build_cnn(keras)`
    """
    layers = keras_module.layers
    return keras_module.Sequential(
        [
            keras_module.Input((28, 28)),
            layers.Reshape((28, 28, 1)),
            layers.Conv2D(12, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(10),
        ],
        name="mnist_cnn",
    )


def build_mlp(keras_module):
    """A 784-1024-1024-10 MLP (1,863,690 parameters), built with `keras_module`.

    Input(28, 28) -> Flatten -> Dense(1024, relu) -> Dense(1024, relu) ->
    Dense(10) logits.

    Args:
        keras_module: The Keras to build with: `keras` (Keras 3) or
            `tf_keras` (Keras 2, for TFMOT).

    Returns:
        An uncompiled, built `Sequential` model.

    Example: `model = build_mlp(keras)`
    """
    layers = keras_module.layers
    return keras_module.Sequential(
        [
            keras_module.Input((28, 28)),
            layers.Flatten(),
            layers.Dense(1024, activation="relu"),
            layers.Dense(1024, activation="relu"),
            layers.Dense(10),
        ],
        name="mnist_mlp",
    )


BUILDERS = {"cnn": build_cnn, "mlp": build_mlp}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", choices=sorted(BUILDERS), default="cnn")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--epochs", type=int, default=4, help="dense training epochs"
    )
    parser.add_argument(
        "--prune-epochs",
        type=int,
        default=2,
        help="fine-tuning epochs while pruning; the final sparsity is "
        "reached at the end of epoch min(2, prune-epochs)",
    )
    parser.add_argument("--final-sparsity", type=float, default=0.8)
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where the .keras, .zip and compressed files go (default: a "
        "temporary directory)",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "prune_epochs", "num_train", "num_test"):
        value = getattr(args, name)
        if value < 1:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} must be >= 1. Received: {flag}={value}")
    if not INITIAL_SPARSITY <= args.final_sparsity < 1.0:
        parser.error(
            f"--final-sparsity must be in [{INITIAL_SPARSITY}, 1), the "
            "schedule starts at 0.5. Received: "
            f"--final-sparsity={args.final_sparsity}"
        )
    return args


def compile_model(keras, model):
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model, x, y):
    """Fraction of `x` classified as `y`."""
    logits = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def pruning_schedule(sparsity, num_train, prune_epochs, final_sparsity):
    """`PolynomialDecay(0.5 -> final)` over the first two pruning epochs.

    The tutorial sets `end_step` to the number of steps of two epochs.
    This library counts optimizer steps from 0 (TFMOT from 1), so the last
    step of epoch 2 is `2 * steps_per_epoch - 1`.
    """
    steps_per_epoch = math.ceil(num_train / BATCH_SIZE)
    end_step = min(RAMP_EPOCHS, prune_epochs) * steps_per_epoch - 1
    return sparsity.PolynomialDecay(
        initial_sparsity=INITIAL_SPARSITY,
        final_sparsity=final_sparsity,
        begin_step=0,
        end_step=end_step,
    )


def prune_and_fine_tune(keras, sparsity, model, x, y, args):
    """Returns the pruned, fine-tuned and stripped copy of `model`."""
    schedule = pruning_schedule(
        sparsity, len(x), args.prune_epochs, args.final_sparsity
    )
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    compile_model(keras, pruned)
    pruned.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=args.prune_epochs,
        callbacks=[sparsity.UpdatePruningStep()],
        verbose=0,
    )
    return sparsity.strip_pruning(pruned)


def kernel_sparsity(model):
    """`[(weight path, shape, fraction of zeros)]` for weights of rank >= 2."""
    rows = []
    for weight, value in zip(model.weights, model.get_weights()):
        if value.ndim >= 2:
            zeros = 1.0 - np.count_nonzero(value) / value.size
            rows.append((weight.path, value.shape, zeros))
    return rows


def saved_sizes(keras, build, model, out_dir, name):
    """Saves `model`'s weights; returns (.keras bytes, zipped bytes).

    They are saved in a fresh model from `build`, never compiled, so the
    file holds no optimizer slots (TFMOT's tutorial saves with
    `include_optimizer=False`).
    """
    copy = build(keras)
    copy.set_weights(model.get_weights())
    path = os.path.join(out_dir, f"{name}.keras")
    copy.save(path)
    zipped = os.path.join(out_dir, f"{name}.zip")
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as f:
        f.write(path, arcname=os.path.basename(path))
    return os.path.getsize(path), os.path.getsize(zipped)


def main(argv=None):
    args = parse_args(argv)
    import keras

    import keras_sparsity as sparsity

    print(f"Keras backend: {keras.backend.backend()}")
    keras.utils.set_random_seed(SEED)
    (x_train, y_train), (x_test, y_test) = load_mnist(
        args.data_dir, args.num_train, args.num_test, seed=SEED
    )
    build = BUILDERS[args.model]
    model = build(keras)
    compile_model(keras, model)
    model.fit(
        x_train,
        y_train,
        batch_size=BATCH_SIZE,
        epochs=args.epochs,
        verbose=0,
    )
    dense_accuracy = accuracy(model, x_test, y_test)
    stripped = prune_and_fine_tune(
        keras, sparsity, model, x_train, y_train, args
    )
    pruned_accuracy = accuracy(stripped, x_test, y_test)

    out_dir = args.out_dir or tempfile.mkdtemp(prefix="mnist_cnn_")
    os.makedirs(out_dir, exist_ok=True)
    dense_keras, dense_zip = saved_sizes(
        keras, build, model, out_dir, f"{args.model}_dense"
    )
    pruned_keras, pruned_zip = saved_sizes(
        keras, build, stripped, out_dir, f"{args.model}_pruned"
    )
    compressed = sparsity.save_compressed(
        stripped, os.path.join(out_dir, f"{args.model}_pruned.sparse")
    )

    for path, shape, zeros in kernel_sparsity(stripped):
        print(f"Sparsity of {path} {shape}: {zeros:.4f}")
    print(
        f"Test accuracy: dense {dense_accuracy:.4f}, "
        f"pruned {pruned_accuracy:.4f}"
    )
    print(
        f"Zipped .keras size: dense {dense_zip:,} bytes, pruned "
        f"{pruned_zip:,} bytes ({dense_zip / pruned_zip:.2f}x smaller)"
    )
    print(
        f"save_compressed size: {compressed['compressed_bytes']:,} bytes "
        f"({dense_keras / compressed['compressed_bytes']:.2f}x smaller than "
        f"the dense .keras, {dense_keras:,} bytes; pruned .keras "
        f"{pruned_keras:,} bytes)"
    )
    print(f"Saved in {out_dir}")


if __name__ == "__main__":
    main()
