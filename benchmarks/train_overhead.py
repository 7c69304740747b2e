"""Training step time of pruned vs dense models, measured side by side.

Models (TFMOT's MNIST setup, batch 128, Adam, sparse categorical
cross-entropy from logits, accuracy metric):

* `cnn`: TFMOT's tutorial CNN, Input(28, 28) -> Reshape(28, 28, 1) ->
  Conv2D(12, 3, relu) -> MaxPooling2D(2) -> Flatten -> Dense(10).
* `mlp`: 784-1024-1024-10 with relu.

The pruned model is `prune_low_magnitude(dense, pruning_schedule=
PolynomialDecay(0.5, 0.8, begin_step=0, end_step=<steps of 2 epochs>,
frequency=100))`, cloned from the dense model so both start from the same
weights. Both are compiled with the default jit settings of the backend.
Besides TFMOT's uniform magnitude pruning, the same model is pruned with
`allocation="global"`, `allocation="erk"` and `criterion="saliency"`,
and trained sparse with SET and RigL (`ConstantSparsity(0.8)`, one
drop-and-grow update at step 0 of each block, like the gradual schedule's
one mask update) (`--settings`), each timed against the same dense model
in the same interleaved rounds.

Method, per backend (one process each, as Keras fixes the backend per
process) and per model:

1. Warm up: a few steps on each model, so tracing and compilation are
   excluded, including one mask-update step.
2. Interleave: `--repeats` rounds of one block of `--block-steps` (100)
   steps on the dense model and one on each pruned model (the order
   rotates between rounds), over the same 100 fixed batches; per-step
   time = block time / 100. Before every block both optimizers'
   `iterations` are set to 0, so each pruned block runs steps 0..99 of the
   schedule: exactly one mask update (step 0) and 99 plain steps, the 1%
   share that `frequency=100` gives during pruning. (Left alone, the
   counter would pass `end_step` after the warm-up and the timed blocks
   would hold no update at all.)
3. Separately, the cost of a mask update: single `train_on_batch` steps of
   the pruned model at step 0 (update) and at step 1000 (past `end_step`,
   plain), interleaved; the difference of their medians is the extra time
   of one update step.

A block is timed as one `fit` call over its 100 batches on JAX and PyTorch,
and as 100 `train_on_batch` calls on TensorFlow (`--method auto`): on this
machine TensorFlow's `fit` over NumPy arrays (a `tf.data` pipeline) runs
whole blocks at either ~13 or ~26 ms per step at random, for dense and
pruned models alike, which hides the difference being measured, while its
`train_on_batch` steps are stable. JAX's `train_on_batch` adds a per-call
state gather and sync that `fit` does not have, so `fit` is the faithful
choice there. `--method fit` or `--method train_on_batch` forces one.

Reported per backend and model: min/median/max per-step time over the
blocks, dense and pruned, the ratio of the medians (and of the minima), and
the update step's extra cost with its share of the ratio.

Usage (from the repository root):

```
python benchmarks/train_overhead.py                  # jax, tensorflow, torch
python benchmarks/train_overhead.py --markdown       # also BENCHMARKS.md rows
python benchmarks/train_overhead.py --quick          # jax only, few repeats
python benchmarks/train_overhead.py --backend torch --models mlp
python benchmarks/train_overhead.py --method train_on_batch
python benchmarks/train_overhead.py --data-dir /path/to/mnist
```

The data is MNIST's t10k split in IDX format (`t10k-images-idx3-ubyte.gz`,
`t10k-labels-idx1-ubyte.gz`); 8,000 images chosen with a fixed seed are
used for training, as in the TFMOT anchors of this project.
"""

import argparse
import gzip
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from backend_runs import print_result
from backend_runs import run_child
from provenance import machine
from provenance import revision

BACKENDS = ("jax", "tensorflow", "torch")
MODELS = ("cnn", "mlp")
BATCH_SIZE = 128
NUM_TRAIN = 8000
SEED = 0
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"
PLAIN_STEP = 1000


def read_idx(path):
    """Reads one IDX file (optionally gzipped) into a NumPy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(
            f"{path} is not an IDX file of unsigned bytes (magic "
            f"{data[:4].hex()})."
        )
    num_dims = data[3]
    dims = [
        int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big")
        for i in range(num_dims)
    ]
    offset = 4 + 4 * num_dims
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    return array.reshape(dims)


def load_mnist(data_dir):
    """8,000 training images (float32 in [0, 1]) and labels, fixed seed."""
    data_dir = Path(data_dir)
    images = read_idx(data_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / "t10k-labels-idx1-ubyte.gz")
    order = np.random.default_rng(SEED).permutation(len(images))[:NUM_TRAIN]
    x = images[order].astype("float32") / 255.0
    y = labels[order].astype("int32")
    return x, y


def build_model(name):
    import keras

    if name == "cnn":
        layers = [
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(12, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    else:
        layers = [
            keras.layers.Flatten(),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(10),
        ]
    return keras.Sequential([keras.Input((28, 28))] + layers, name=name)


def compile_model(model):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def cycled_batches(x, y, num_steps):
    """`num_steps` consecutive batches, wrapping around the data."""
    index = np.arange(num_steps * BATCH_SIZE) % len(x)
    return x[index], y[index]


def timed_block(model, x, y, method):
    """Seconds for one block of steps from schedule step 0."""
    model.optimizer.iterations.assign(0)
    if method == "fit":
        start = time.perf_counter()
        model.fit(
            x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0
        )
        return time.perf_counter() - start
    batches = [
        (x[i:i + BATCH_SIZE], y[i:i + BATCH_SIZE])
        for i in range(0, len(x), BATCH_SIZE)
    ]
    start = time.perf_counter()
    for batch_x, batch_y in batches:
        model.train_on_batch(batch_x, batch_y)
    return time.perf_counter() - start


def resolve_method(method):
    import keras

    if method != "auto":
        return method
    if keras.backend.backend() == "tensorflow":
        return "train_on_batch"
    return "fit"


def timed_step(model, x, y, iteration):
    model.optimizer.iterations.assign(iteration)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    return time.perf_counter() - start


def summary(times_ms):
    return {
        "min": min(times_ms),
        "median": statistics.median(times_ms),
        "max": max(times_ms),
    }


SETTINGS = {
    "uniform": {},
    "global": {"allocation": "global"},
    "erk": {"allocation": "erk"},
    "saliency": {"criterion": "saliency"},
    "set": {"regrowth": "SET"},
    "rigl": {"regrowth": "RigL"},
}


def pruning_options(keras_sparsity, setting, schedule):
    """`prune_low_magnitude` arguments of a setting. Dynamic sparse
    training runs at the schedule's final sparsity from step 0, with one
    drop-and-grow update per 100 steps (as the gradual schedule's one mask
    update per block)."""
    options = dict(SETTINGS[setting])
    if "regrowth" not in options:
        return dict(options, pruning_schedule=schedule)
    regrowth = getattr(keras_sparsity, options.pop("regrowth"))
    return dict(
        options,
        pruning_schedule=keras_sparsity.ConstantSparsity(
            schedule.final_sparsity, begin_step=0
        ),
        regrowth=regrowth(update_frequency=100, end_step=10**9),
    )


def measure_model(name, x, y, args):
    """One result per pruning setting, each against the same dense model,
    all blocks interleaved."""
    import keras

    import keras_sparsity

    method = resolve_method(args.method)
    load_before = os.getloadavg()[0]
    end_step = 2 * math.ceil(len(x) / BATCH_SIZE)
    schedule = keras_sparsity.PolynomialDecay(
        0.5, 0.8, begin_step=0, end_step=end_step, frequency=100
    )
    keras.utils.set_random_seed(SEED)
    dense = build_model(name)
    models = {"dense": dense}
    for setting in args.settings:
        models[setting] = keras_sparsity.prune_low_magnitude(
            dense, **pruning_options(keras_sparsity, setting, schedule)
        )
    for model in models.values():
        compile_model(model)

    warm_x, warm_y = cycled_batches(x, y, args.warmup_steps)
    for model in models.values():
        timed_block(model, warm_x, warm_y, method)
    block_x, block_y = cycled_batches(x, y, args.block_steps)
    kinds = list(models)
    per_step = {kind: [] for kind in kinds}
    for round_index in range(args.repeats):
        # Rotate the order, so that no model always runs first.
        shift = round_index % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            seconds = timed_block(models[kind], block_x, block_y, method)
            per_step[kind].append(1000.0 * seconds / args.block_steps)

    dense_stats = summary(per_step["dense"])
    results = []
    step_x, step_y = cycled_batches(x, y, 1)
    for setting in args.settings:
        pruned = models[setting]
        for iteration in (0, PLAIN_STEP):
            timed_step(pruned, step_x, step_y, iteration)
        update_ms, plain_ms = [], []
        for _ in range(args.update_repeats):
            update_ms.append(1000.0 * timed_step(pruned, step_x, step_y, 0))
            plain_ms.append(
                1000.0 * timed_step(pruned, step_x, step_y, PLAIN_STEP)
            )
        pruned_stats = summary(per_step[setting])
        update_extra_ms = statistics.median(update_ms) - statistics.median(
            plain_ms
        )
        results.append(
            {
                "backend": keras.backend.backend(),
                "model": name,
                "setting": setting,
                "jit_compile": bool(pruned.jit_compile),
                "method": method,
                "end_step": end_step,
                "dense_ms": dense_stats,
                "pruned_ms": pruned_stats,
                "ratio": pruned_stats["median"] / dense_stats["median"],
                "ratio_of_mins": pruned_stats["min"] / dense_stats["min"],
                "update_step_ms": statistics.median(update_ms),
                "plain_step_ms": statistics.median(plain_ms),
                "update_extra_ms": update_extra_ms,
                "update_share": (
                    update_extra_ms / args.block_steps / dense_stats["median"]
                ),
                "blocks": args.repeats,
                "block_steps": args.block_steps,
                "load_1min": [load_before, os.getloadavg()[0]],
            }
        )
    return results


def run_backend(args):
    """Runs in a process whose backend is `args.backend`; prints results."""
    os.environ["KERAS_BACKEND"] = args.backend
    import keras

    if keras.backend.backend() != args.backend:
        raise RuntimeError(
            f"Keras was already imported with backend "
            f"{keras.backend.backend()!r}; run this script in a fresh "
            f"process. Received: --backend={args.backend}"
        )
    import importlib

    framework = importlib.import_module(args.backend)
    versions = f"keras {keras.__version__}, {args.backend} " + (
        framework.__version__
    )
    x, y = load_mnist(args.data_dir)
    for name in args.models:
        for result in measure_model(name, x, y, args):
            result["versions"] = versions
            print_result(result)


def spawn_backend(backend, args):
    """Runs this script for one backend in a subprocess; returns results."""
    command = [
        sys.executable, str(Path(__file__).resolve()),
        "--backend", backend,
        "--data-dir", str(args.data_dir),
        "--models", *args.models,
        "--repeats", str(args.repeats),
        "--block-steps", str(args.block_steps),
        "--warmup-steps", str(args.warmup_steps),
        "--update-repeats", str(args.update_repeats),
        "--method", args.method,
        "--settings", *args.settings,
        "--child",
    ]
    return run_child(command, backend)


def _range(stats):
    return f"{stats['min']:.2f}/{stats['median']:.2f}/{stats['max']:.2f}"


def print_table(results, revision):
    header = (
        f"{'backend':<11}{'model':<6}{'setting':<10}{'jit':<6}{'method':<15}"
        f"{'dense ms/step':>22}{'pruned ms/step':>22}{'ratio':>8}"
        f"{'(mins)':>8}"
        f"{'update +ms':>12}{'of ratio':>10}"
    )
    steps = results[0]["block_steps"]
    print(
        f"per-step time in ms, min/median/max over blocks of {steps} steps "
        "(schedule steps 0.., so 1 mask update per 100); ratio of medians; "
        "(mins): ratio of the fastest blocks; update +ms: extra time of one "
        "mask-update step; of ratio: its share of the ratio "
        f"(+ms / {steps} / dense median)"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['backend']:<11}{r['model']:<6}{r['setting']:<10}"
            f"{str(r['jit_compile']):<6}"
            f"{r['method']:<15}"
            f"{_range(r['dense_ms']):>22}{_range(r['pruned_ms']):>22}"
            f"{r['ratio']:>8.3f}{r['ratio_of_mins']:>8.3f}"
            f"{r['update_extra_ms']:>12.1f}"
            f"{r['update_share']:>+10.3f}"
        )
    loads = ", ".join(
        f"{r['backend']}/{r['model']} {r['load_1min'][0]:.1f}->"
        f"{r['load_1min'][1]:.1f}"
        for r in results
    )
    print(f"1-min load average before->after each model: {loads}")
    versions = sorted({r["versions"] for r in results})
    print(f"commit {revision}; " + "; ".join(versions))


def markdown(results, revision):
    """The results as a Markdown table, headed by machine, versions, date."""
    versions = "; ".join(sorted({r["versions"] for r in results}))
    lines = [
        f"Training step time, pruned vs dense ({time.strftime('%Y-%m-%d')}, "
        f"{machine()}, commit {revision}; "
        f"{versions})",
        "",
        "| backend | model | setting | jit | method "
        "| dense ms/step (min/med/max) "
        "| pruned ms/step (min/med/max) | ratio of medians "
        "| ratio of mins "
        "| mask-update step, extra ms | updates' share of ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['model']} | {r['setting']} "
            f"| {r['jit_compile']} "
            f"| {r['method']} "
            f"| {_range(r['dense_ms'])} | {_range(r['pruned_ms'])} "
            f"| {r['ratio']:.3f} | {r['ratio_of_mins']:.3f} "
            f"| {r['update_extra_ms']:.1f} "
            f"| {r['update_share']:+.3f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, action="append",
        help="Backend to measure (repeatable). Default: all three, or jax "
        "with --quick.",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS)
    )
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="Interleaved rounds of one dense and one pruned block "
        "(default 11, or 2 with --quick).",
    )
    parser.add_argument("--block-steps", type=int, default=100)
    parser.add_argument(
        "--method", choices=("auto", "fit", "train_on_batch"),
        default="auto",
        help="How a block is run: one `fit` call or `train_on_batch` calls. "
        "auto: train_on_batch on tensorflow, fit elsewhere.",
    )
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument(
        "--settings", nargs="+", choices=tuple(SETTINGS), default=None,
        help="Pruning settings timed against the dense model: uniform "
        "magnitude (TFMOT's), global or ERK allocation, saliency "
        "criterion, SET or RigL dynamic sparse training. Default: all, or "
        "uniform and global with --quick.",
    )
    parser.add_argument(
        "--update-repeats", type=int, default=None,
        help="Single update/plain step pairs timed to cost a mask update "
        "(default 21, or 3 with --quick).",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="Smoke run: jax only (unless --backend), few repeats.",
    )
    parser.add_argument(
        "--markdown", action="store_true",
        help="Also print the Markdown table rows for BENCHMARKS.md.",
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help="Also write the Markdown table to this file.",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 11
    if args.update_repeats is None:
        args.update_repeats = 3 if args.quick else 21
    if args.backend is None:
        args.backend = ["jax"] if args.quick else list(BACKENDS)
    if args.settings is None:
        args.settings = ["uniform", "global"] if args.quick else list(SETTINGS)
    if args.block_steps < 1 or args.repeats < 1 or args.update_repeats < 1:
        parser.error("--block-steps, --repeats and --update-repeats must "
                     "be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        (args.backend,) = args.backend
        run_backend(args)
        return
    commit = revision()
    results = []
    for backend in args.backend:
        print(f"measuring {backend} ...", file=sys.stderr, flush=True)
        results.extend(spawn_backend(backend, args))
    print_table(results, commit)
    table = markdown(results, commit)
    if args.markdown:
        print()
        print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
