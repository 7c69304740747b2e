"""File sizes and LiteRT latency that sparsity buys, measured side by side.

Two parts, in the process's Keras backend (`KERAS_BACKEND`; conversion to
LiteRT is fastest on `tensorflow`, where it runs in this process):

1. **Sizes.** An MLP (784-1024-1024-10; 784-256-256-10 with `--quick`) is
   pruned by `prune_low_magnitude` with `ConstantSparsity(s)` for s in
   50/80/90/95 % (unstructured; one training step on random data sets
   the masks) and stripped. Per sparsity: the dense `.keras` file (no
   optimizer state), that file zipped with DEFLATE level 9 (the route
   of TFMOT's tutorial), and `save_compressed` with `values="float32"`,
   `"float16"` and `"int8"`. Reported as ratios against the dense
   `.keras` file and as each file's size over its information bound
   (`keras_sparsity.compressed.information_bound_bytes`: mask entropy
   plus kept values at their stored width).
2. **LiteRT latency.** A stack of fully-connected layers (4096-1024-1024-
   1024 with relu; 1024-1024-1024 with `--quick`) is pruned to 90 % in
   blocks of 4 inputs (`block_size=(4, 1)`, TFLite's 1x4 blocks, which
   the converter keeps sparse) and exported with `export_litert`; the
   unpruned model (the same initial weights) is exported the same way as
   the dense reference. Both files run in TensorFlow's LiteRT interpreter
   with its default delegates (XNNPack takes the dense layers; the sparse
   ones run on TFLite's built-in sparse kernel) and `--threads` threads.
   Per batch size (1 and 8), `--repeats` rounds time one block of calls
   on each model, alternating which goes first; a block lasts about
   `--block-seconds`. Reported: min/median/max microseconds per call and
   the dense/sparse ratio of the medians and of the minima. The sparse
   file's outputs are checked against the Keras model first.

Usage (from the repository root):

```
KERAS_BACKEND=tensorflow python benchmarks/bench_compression.py
KERAS_BACKEND=tensorflow python benchmarks/bench_compression.py --quick
python benchmarks/bench_compression.py --out compression.md  # also a file
python benchmarks/bench_compression.py --threads 2 --repeats 31
```
"""

import argparse
import io
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
from provenance import revision

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import keras_sparsity as sparsity  # noqa: E402
from keras_sparsity.compressed import information_bound_bytes  # noqa: E402
from keras_sparsity.litert import export_litert  # noqa: E402

SPARSITIES = (0.5, 0.8, 0.9, 0.95)
VALUES = ("float32", "float16", "int8")
BATCHES = (1, 8)
SEED = 0


def prune_once(model, pruning_schedule, **kwargs):
    """`model` pruned by one training step on random data, then stripped."""
    pruned = sparsity.prune_low_magnitude(
        model, pruning_schedule=pruning_schedule, **kwargs
    )
    pruned.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    rng = np.random.RandomState(SEED)
    x = rng.rand(8, *model.input_shape[1:]).astype("float32")
    y = rng.rand(8, *model.output_shape[1:]).astype("float32")
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return sparsity.strip_pruning(pruned)


def sequential(widths, name):
    layers = [keras.Input((widths[0],))]
    for width in widths[1:-1]:
        layers.append(keras.layers.Dense(width, activation="relu"))
    layers.append(keras.layers.Dense(widths[-1]))
    return keras.Sequential(layers, name=name)


def plain_keras_bytes(model, directory):
    """The `.keras` file of `model`'s config and weights, no optimizer."""
    plain = keras.Sequential.from_config(model.get_config())
    plain.set_weights(model.get_weights())
    path = os.path.join(directory, "dense.keras")
    plain.save(path)
    with open(path, "rb") as file:
        return file.read()


def zipped_size(data):
    buffer = io.BytesIO()
    with zipfile.ZipFile(
        buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9
    ) as archive:
        archive.writestr("model.keras", data)
    return len(buffer.getvalue())


def measure_sizes(widths):
    rows = []
    for target in SPARSITIES:
        keras.utils.set_random_seed(SEED)
        model = prune_once(
            sequential(widths, "mlp"),
            sparsity.ConstantSparsity(target, 0, frequency=1),
        )
        kernels = [layer.kernel for layer in model.layers]
        zeros = sum(
            int(np.sum(keras.ops.convert_to_numpy(k) == 0)) for k in kernels
        )
        row = {
            "sparsity": zeros / sum(math.prod(k.shape) for k in kernels),
            "target": target,
        }
        with tempfile.TemporaryDirectory() as directory:
            dense = plain_keras_bytes(model, directory)
            row["keras"] = len(dense)
            row["zipped"] = zipped_size(dense)
            for values in VALUES:
                path = os.path.join(directory, f"{values}.zip")
                info = sparsity.save_compressed(model, path, values=values)
                row[values] = info["compressed_bytes"]
                row[f"bound_{values}"] = information_bound_bytes(model, values)
        rows.append(row)
    return rows


def interpreter(path, batch, threads):
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = tf.lite.Interpreter(model_path=path, num_threads=threads)
    (given,) = runner.get_input_details()
    runner.resize_tensor_input(given["index"], (batch, given["shape"][1]))
    runner.allocate_tensors()
    (output,) = runner.get_output_details()
    return runner, given["index"], output["index"]


def timed_block(runner, num_calls):
    start = time.perf_counter()
    for _ in range(num_calls):
        runner.invoke()
    return (time.perf_counter() - start) / num_calls


def measure_latency(widths, args):
    keras.utils.set_random_seed(SEED)
    dense_model = sequential(widths, "fc")
    sparse_model = prune_once(
        dense_model,
        sparsity.ConstantSparsity(0.9, 0, frequency=1),
        block_size=(4, 1),
    )
    with tempfile.TemporaryDirectory() as directory:
        files = {}
        for name, model in (("dense", dense_model), ("sparse", sparse_model)):
            path = os.path.join(directory, f"{name}.tflite")
            files[name] = export_litert(model, path)
        rows = [
            time_batch(files, sparse_model, widths[0], batch, args)
            for batch in BATCHES
        ]
    return files, rows


def time_batch(files, sparse_model, num_inputs, batch, args):
    """Interleaved blocks of calls on each file; checks the sparse file's
    outputs against `sparse_model` first."""
    x = np.random.RandomState(SEED).rand(batch, num_inputs).astype("float32")
    runners = {}
    for name, info in files.items():
        runner, given, output = interpreter(info["path"], batch, args.threads)
        runner.set_tensor(given, x)
        runner.invoke()
        runners[name] = runner
        if name == "sparse":
            expected = keras.ops.convert_to_numpy(sparse_model(x))
            error = np.abs(runner.get_tensor(output) - expected).max()
            if error > 1e-3 * max(1.0, np.abs(expected).max()):
                raise AssertionError(
                    f"LiteRT and Keras outputs differ by {error}"
                )
    num_calls = {
        name: max(1, int(args.block_seconds / timed_block(runner, 3)))
        for name, runner in runners.items()
    }
    times = {name: [] for name in runners}
    for round_index in range(args.repeats):
        order = ["dense", "sparse"][:: 1 if round_index % 2 else -1]
        for name in order:
            seconds = timed_block(runners[name], num_calls[name])
            times[name].append(seconds * 1e6)
    dense, sparse = times["dense"], times["sparse"]
    return {
        "batch": batch,
        "dense": dense,
        "sparse": sparse,
        "ratio": statistics.median(dense) / statistics.median(sparse),
        "ratio_of_mins": min(dense) / min(sparse),
    }


def size_tables(widths, rows):
    layout = "-".join(str(w) for w in widths)
    lines = [
        f"**Sizes, MLP {layout}: dense `.keras` bytes over each file's "
        "bytes (higher = smaller file)**",
        "",
        "| sparsity | dense .keras | zipped .keras | float32 | float16 "
        "| int8 | bound float32 | bound float16 | bound int8 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["zipped"]] + [row[v] for v in VALUES]
        cells += [row[f"bound_{v}"] for v in VALUES]
        ratios = " | ".join(f"{row['keras'] / n:.2f}x" for n in cells)
        lines.append(
            f"| {row['sparsity']:.1%} | {row['keras']:,} B | {ratios} |"
        )
    lines += [
        "",
        "**Compressed size over its information bound (1.00 = at the "
        "bound)**",
        "",
        "| sparsity | float32 | float16 | int8 |",
        "|---|---|---|---|",
    ]
    for row in rows:
        cells = " | ".join(
            f"{row[v] / row[f'bound_{v}']:.3f}" for v in VALUES
        )
        lines.append(f"| {row['sparsity']:.1%} | {cells} |")
    return lines


def _range(times):
    return (
        f"{min(times):.0f} / {statistics.median(times):.0f} / "
        f"{max(times):.0f}"
    )


def latency_tables(widths, files, rows, args):
    layout = "-".join(str(w) for w in widths)
    lines = [
        f"**LiteRT files, fully-connected {layout}, 90 % in 1x4 blocks**",
        "",
        "| model | bytes | ops | kernels stored sparse, run sparse |",
        "|---|---|---|---|",
    ]
    for name, info in files.items():
        kernels = [t for t in info["tensors"] if len(t["shape"]) == 2]
        kept = sum(t["sparse"] and not t["densified"] for t in kernels)
        ops = ", ".join(info["ops"])
        lines.append(
            f"| {name} | {info['bytes']:,} | {ops} | "
            f"{kept} of {len(kernels)} |"
        )
    lines += [
        "",
        f"**LiteRT latency, {args.threads} thread(s), {args.repeats} "
        "rounds: microseconds per call, min / median / max**",
        "",
        "| batch | dense | sparse 1x4 90 % | dense/sparse (medians) "
        "| (minima) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch']} | {_range(row['dense'])} | "
            f"{_range(row['sparse'])} | {row['ratio']:.2f}x | "
            f"{row['ratio_of_mins']:.2f}x |"
        )
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Smaller models, 5 rounds, short blocks: a smoke run.",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="Timed rounds per batch size (default 21, or 5 with --quick).",
    )
    parser.add_argument(
        "--block-seconds",
        type=float,
        default=None,
        help="Length of one timed block (default 0.2 s, 0.02 with --quick).",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="LiteRT interpreter threads."
    )
    parser.add_argument(
        "--out", type=Path, help="Also write the Markdown tables to this file."
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 21
    if args.block_seconds is None:
        args.block_seconds = 0.02 if args.quick else 0.2
    for name in ("repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.block_seconds <= 0:
        parser.error("--block-seconds must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    mlp = (784, 256, 256, 10) if args.quick else (784, 1024, 1024, 10)
    stack = (1024, 1024, 1024) if args.quick else (4096, 1024, 1024, 1024)
    sizes = measure_sizes(mlp)
    files, latency = measure_latency(stack, args)
    import tensorflow as tf

    lines = [
        f"Keras {keras.__version__} on {keras.backend.backend()}, "
        f"TensorFlow {tf.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, commit {revision()}"
        + (", --quick" if args.quick else ""),
        "",
        *size_tables(mlp, sizes),
        "",
        *latency_tables(stack, files, latency, args),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
