"""One library's run of TFMOT's pruning recipe, for `tfmot_recipe.py`.

Runs in a process of its own, because Keras fixes its backend per process
and TFMOT needs its own virtualenv:

```
KERAS_BACKEND=jax .venv/bin/python benchmarks/tfmot_worker.py \
    --library keras_sparsity --json-out jax.json
TF_USE_LEGACY_KERAS=1 .venv-tfmot/bin/python benchmarks/tfmot_worker.py \
    --library tfmot --json-out tfmot.json
```

The two libraries share an API, so one code path runs both: `sparsity` is
`keras_sparsity` (Keras 3) or `tfmot.sparsity.keras` (`tf_keras`). Per
model: initial weights drawn with NumPy from the seed and set in the model;
dense training; then, from copies of the dense weights, pruning with
`PolynomialDecay(0.5 -> s)` for each target `s`; per run the accuracy, the
realised sparsity per kernel, per-step times (a callback timing each
batch, from `on_train_batch_begin` to `on_train_batch_end`, identical in
both libraries), the wall time of the pruning phase and the sizes of the
stripped model. Epochs are run as one `fit` call each over a NumPy
permutation of the data drawn from the seed, so both libraries see the
batches in the same order. The results are written as JSON.

For `benchmarks/bench_allocation.py` (defaults leave the recipe above
unchanged): `--models mlp300` (LeNet-300-100), `--initial-sparsity`,
`--ramp-steps` (the schedule ends at that batch instead of after
`--ramp-epochs`), `--frequency`, and `--dense-weights-dir` (start from
`<dir>/<model>.npz`, `np.savez(path, *model.get_weights())`, instead of
training the dense model).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import zipfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))
from datasets import load_mnist  # noqa: E402
from mnist_cnn import BUILDERS as EXAMPLE_BUILDERS  # noqa: E402
from mnist_cnn import accuracy  # noqa: E402
from mnist_cnn import compile_model  # noqa: E402

LIBRARIES = ("keras_sparsity", "tfmot")
BATCH_SIZE = 128
INITIAL_SPARSITY = 0.5


def build_mlp_300_100(keras_module):
    """LeNet-300-100 (266,610 parameters), built with `keras_module`.

    Input(28, 28) -> Flatten -> Dense(300, relu) -> Dense(100, relu) ->
    Dense(10) logits: kernels 784x300, 300x100, 100x10.
    """
    layers = keras_module.layers
    return keras_module.Sequential(
        [
            keras_module.Input((28, 28)),
            layers.Flatten(),
            layers.Dense(300, activation="relu"),
            layers.Dense(100, activation="relu"),
            layers.Dense(10),
        ],
        name="mnist_mlp_300_100",
    )


BUILDERS = dict(EXAMPLE_BUILDERS, mlp300=build_mlp_300_100)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--library", choices=LIBRARIES, required=True)
    parser.add_argument(
        "--models", nargs="+", choices=sorted(BUILDERS), default=["cnn", "mlp"]
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        type=float,
        default=[0.8, 0.9, 0.95],
        help="final sparsities; each prunes a copy of the dense weights",
    )
    parser.add_argument("--dense-epochs", type=int, default=4)
    parser.add_argument(
        "--ramp-epochs",
        type=int,
        default=2,
        help="epochs from 0.5 to the final sparsity (the schedule's end)",
    )
    parser.add_argument(
        "--recipe-epochs",
        type=int,
        default=2,
        help="pruning epochs for the first target (the tutorial's 2)",
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=4,
        help="pruning epochs for the other targets",
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", required=True)
    parser.add_argument(
        "--initial-sparsity", type=float, default=INITIAL_SPARSITY,
        help="the schedule's initial sparsity (the tutorial's 0.5)",
    )
    parser.add_argument(
        "--ramp-steps", type=int, default=None,
        help="batches until the schedule ends (default: --ramp-epochs "
        "epochs' worth)",
    )
    parser.add_argument(
        "--frequency", type=int, default=100,
        help="steps between mask updates (the default 100)",
    )
    parser.add_argument(
        "--dense-weights-dir", default=None,
        help="start from <dir>/<model>.npz (get_weights() order) instead "
        "of training the dense model",
    )
    return parser.parse_args(argv)


def import_library(library):
    """`(keras module, sparsity module, versions dict)` for `library`."""
    versions = {"python": platform.python_version()}
    if library == "tfmot":
        if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
            raise RuntimeError(
                "TFMOT needs Keras 2: run this worker with "
                "TF_USE_LEGACY_KERAS=1 in the TFMOT virtualenv. Received: "
                f"TF_USE_LEGACY_KERAS={os.environ.get('TF_USE_LEGACY_KERAS')}"
            )
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras

        versions.update(
            tensorflow=tf.__version__,
            tf_keras=keras.__version__,
            tfmot=tfmot.__version__,
        )
        return keras, tfmot.sparsity.keras, versions
    import importlib

    import keras

    import keras_sparsity

    backend = keras.backend.backend()
    versions.update(keras=keras.__version__)
    versions[backend] = importlib.import_module(backend).__version__
    return keras, keras_sparsity, versions


def initial_weights(model, seed):
    """Glorot-uniform kernels and zero biases, drawn with NumPy from `seed`.

    Fans are computed as Keras does (receptive field times channels), so
    the draw matches each library's default initializer in distribution,
    and both libraries start from the very same numbers.
    """
    rng = np.random.default_rng(seed)
    weights = []
    for value in model.get_weights():
        if value.ndim < 2:
            weights.append(np.zeros(value.shape, "float32"))
            continue
        receptive = math.prod(value.shape[:-2])
        fan_in = value.shape[-2] * receptive
        fan_out = value.shape[-1] * receptive
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        weights.append(
            rng.uniform(-limit, limit, value.shape).astype("float32")
        )
    return weights


def step_timer(keras):
    """A callback timing each full batch, first batch of a run excluded.

    The time runs from `on_train_batch_begin` to `on_train_batch_end`;
    defining a batch-end hook makes both Keras versions convert the logs to
    Python numbers there, so the step has finished. The first batch
    (tracing and compilation) and partial last batches (a separate trace)
    are left out.
    """

    class StepTimer(keras.callbacks.Callback):
        def __init__(self, full_batches):
            super().__init__()
            self.full_batches = full_batches
            self.seconds = []
            self.started = None
            self.first = True

        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            elapsed = time.perf_counter() - self.started
            if self.first:
                self.first = False
            elif batch < self.full_batches:
                self.seconds.append(elapsed)

    return StepTimer


def epoch_orders(num_examples, num_epochs, seed):
    rng = np.random.default_rng(seed)
    return [rng.permutation(num_examples) for _ in range(num_epochs)]


def train(model, x, y, orders, callbacks):
    """One `fit` call per epoch over `x[order]`; returns the wall seconds."""
    start = time.perf_counter()
    for epoch, order in enumerate(orders):
        model.fit(
            x[order],
            y[order],
            batch_size=BATCH_SIZE,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
    return time.perf_counter() - start


def summary_ms(seconds):
    ms = [1000.0 * s for s in seconds]
    return {
        "min": min(ms),
        "median": statistics.median(ms),
        "max": max(ms),
        "count": len(ms),
    }


def binary_entropy(p):
    if p in (0.0, 1.0):
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def information_bound_bytes(arrays):
    """Bytes of an ideal coder for float32 weights stored as mask + values.

    Per array of `n` entries of which `k` are non-zero: `n * H(k / n)` bits
    for the mask (`H` the binary entropy) plus 32 bits per kept value. A
    dense array costs its 32 bits per entry. The same formula as
    `keras_sparsity.compressed.information_bound_bytes`, on NumPy arrays.
    """
    bits = 0.0
    for array in arrays:
        n = array.size
        k = int(np.count_nonzero(array))
        bits += n * binary_entropy(k / n) + 32 * k
    return math.ceil(bits / 8)


def kernel_sparsity(weights):
    """`[{"shape", "size", "zeros", "sparsity"}]` for arrays of rank >= 2."""
    rows = []
    for value in weights:
        if value.ndim >= 2:
            zeros = int(value.size - np.count_nonzero(value))
            rows.append(
                {
                    "shape": list(value.shape),
                    "size": int(value.size),
                    "zeros": zeros,
                    "sparsity": zeros / value.size,
                }
            )
    return rows


def sizes(keras, build, weights, directory, name, library, stripped=None):
    """Sizes in bytes of `weights` saved in a fresh, uncompiled model.

    `keras_file`: the model's `.keras` file (no optimizer); `zipped`: that
    file in a DEFLATE zip (TFMOT's tutorial measure); `bound`:
    `information_bound_bytes`. For keras_sparsity also `save_compressed`
    and the library's own bound of `stripped`.
    """
    model = build(keras)
    model.set_weights(weights)
    path = os.path.join(directory, f"{name}.keras")
    model.save(path)
    zipped = os.path.join(directory, f"{name}.zip")
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as f:
        f.write(path, arcname=os.path.basename(path))
    result = {
        "keras_file": os.path.getsize(path),
        "zipped": os.path.getsize(zipped),
        "bound": information_bound_bytes(weights),
    }
    if library == "keras_sparsity":
        from keras_sparsity import compressed

        info = compressed.save_compressed(
            model, os.path.join(directory, f"{name}.sparse")
        )
        result["save_compressed"] = info["compressed_bytes"]
        result["library_bound"] = compressed.information_bound_bytes(
            model if stripped is None else stripped
        )
    return result


def end_step(library, steps_per_epoch, ramp_epochs, ramp_steps=None):
    """The schedule step of the last batch of the ramp's last epoch (or of
    batch `ramp_steps`, counted from 1, when given).

    TFMOT counts a wrapper's training calls from 1, so the tutorial's
    `end_step = steps of 2 epochs` is its last batch; keras_sparsity counts
    optimizer steps from 0, so the same batch is one less.
    """
    steps = ramp_steps or ramp_epochs * steps_per_epoch
    return steps if library == "tfmot" else steps - 1


def prune_run(keras, sparsity, build, dense_weights, data, target, epochs,
              args, directory, model_name):
    (x_train, y_train), (x_test, y_test) = data
    steps_per_epoch = math.ceil(len(x_train) / BATCH_SIZE)
    schedule = sparsity.PolynomialDecay(
        initial_sparsity=args.initial_sparsity,
        final_sparsity=target,
        begin_step=0,
        end_step=end_step(
            args.library, steps_per_epoch, args.ramp_epochs, args.ramp_steps
        ),
        frequency=args.frequency,
    )
    model = build(keras)
    model.set_weights(dense_weights)
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    compile_model(keras, pruned)
    timer = step_timer(keras)(len(x_train) // BATCH_SIZE)
    orders = epoch_orders(len(x_train), epochs, args.seed + 2)
    wall = train(
        pruned, x_train, y_train, orders,
        [sparsity.UpdatePruningStep(), timer],
    )
    stripped = sparsity.strip_pruning(pruned)
    weights = stripped.get_weights()
    name = f"{model_name}_{target}"
    return {
        "target": target,
        "epochs": epochs,
        "end_step": schedule.end_step,
        "accuracy": accuracy(stripped, x_test, y_test),
        "kernels": kernel_sparsity(weights),
        "step_ms": summary_ms(timer.seconds),
        "wall_s": wall,
        "sizes": sizes(
            keras, build, weights, directory, name, args.library, stripped
        ),
    }


def run_model(keras, sparsity, model_name, data, args, directory):
    (x_train, y_train), (x_test, y_test) = data
    build = BUILDERS[model_name]
    model = build(keras)
    if args.dense_weights_dir:
        with np.load(
            os.path.join(args.dense_weights_dir, f"{model_name}.npz")
        ) as stored:
            model.set_weights(
                [stored[f"arr_{i}"] for i in range(len(stored.files))]
            )
        timer, wall = None, 0.0
    else:
        model.set_weights(initial_weights(model, args.seed))
        compile_model(keras, model)
        timer = step_timer(keras)(len(x_train) // BATCH_SIZE)
        orders = epoch_orders(len(x_train), args.dense_epochs, args.seed + 1)
        wall = train(model, x_train, y_train, orders, [timer])
    dense_weights = model.get_weights()
    result = {
        "model": model_name,
        "dense": {
            "accuracy": accuracy(model, x_test, y_test),
            "step_ms": summary_ms(timer.seconds) if timer else None,
            "wall_s": wall,
            "sizes": sizes(
                keras, build, dense_weights, directory,
                f"{model_name}_dense", args.library,
            ),
        },
        "pruned": [],
    }
    for index, target in enumerate(args.targets):
        epochs = args.recipe_epochs if index == 0 else args.fine_tune_epochs
        print(
            f"  {model_name}: pruning to {target} for {epochs} epochs",
            file=sys.stderr, flush=True,
        )
        result["pruned"].append(
            prune_run(
                keras, sparsity, build, dense_weights, data, target, epochs,
                args, directory, model_name,
            )
        )
    return result


def main(argv=None):
    args = parse_args(argv)
    keras, sparsity, versions = import_library(args.library)
    keras.utils.set_random_seed(args.seed)
    data = load_mnist(
        args.data_dir, args.num_train, args.num_test, seed=args.seed
    )
    if args.library == "tfmot":
        label, backend = "tfmot", "tensorflow (tf_keras)"
    else:
        backend = keras.backend.backend()
        label = f"keras_sparsity/{backend}"
    results = {
        "library": args.library,
        "label": label,
        "backend": backend,
        "versions": versions,
        "models": [],
    }
    with tempfile.TemporaryDirectory() as directory:
        for model_name in args.models:
            print(f"{label}: {model_name}", file=sys.stderr, flush=True)
            results["models"].append(
                run_model(keras, sparsity, model_name, data, args, directory)
            )
    with open(args.json_out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
