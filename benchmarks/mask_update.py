"""Cost of one mask update at 10M and 100M prunable weights, per backend.

A mask update recomputes, for every pruned kernel, the 0/1 mask that keeps
its `round(size * (1 - sparsity))` largest magnitudes. This script times
exactly the work a wrapper does at a pruning step,
`PruneLowMagnitude.compute_mask_update` (unstructured magnitude: `abs`,
the keep count, the 31-pass bisection for the k-th largest magnitude on
float bit patterns, and the tie-break by flat index), for all kernels of
a model at once, against a baseline of one pass over the same weights
(`ops.abs` + `ops.sum` per kernel), and prints the ratio
"update / one pass". TFMOT 0.8.1 needs a full sort per kernel: for
6 x Dense(4096) it spent 10.3 s per update here, 290 times the 36 ms of
one pass (measured for this project, see BRIEF.md).

Models (kernels only; biases are never pruned):

* 10M: 10 x Dense(1024) on 1024 features, 10,485,760 kernel weights;
* 100M: 6 x Dense(4096) on 4096 features, 100,663,296 kernel weights.

Each Dense is wrapped in `PruneLowMagnitude` and built; both functions
take the kernels and the sparsity (0.8, a tensor, as the schedule gives
it inside a train step) and are compiled the way Keras runs a train step
on the backend: `jax.jit` (XLA) on JAX, `tf.function` without XLA on
TensorFlow, eager (under `torch.no_grad()`) on PyTorch. After a warm-up
call of each (compilation), `--repeats` rounds each time one pass and one
update; min/median/max per call are printed, and the ratio of medians.
Each backend runs in its own process (Keras picks its backend once per
process). Memory: at 100M a process holds the kernels, the wrappers' masks
and the new masks (about 1.2 GB) plus per-kernel temporaries.

The machine is shared: absolute times move with its load (printed); the
ratio, measured side by side, is the result.

Usage (from the repository root):

```
.venv/bin/python benchmarks/mask_update.py                 # ~4 min
.venv/bin/python benchmarks/mask_update.py --quick         # jax, 10M
.venv/bin/python benchmarks/mask_update.py --backend torch --sizes 10M
.venv/bin/python benchmarks/mask_update.py --out mask_update.md
```
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from backend_runs import print_result
from backend_runs import run_child
from provenance import machine
from provenance import revision

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("jax", "tensorflow", "torch")
# name -> (number of Dense layers, units): square kernels units x units.
MODELS = {"10M": (10, 1024), "100M": (6, 4096)}
SPARSITY = 0.8
COMPILED_AS = {
    "jax": "jax.jit (XLA)",
    "tensorflow": "tf.function (no XLA)",
    "torch": "eager, no_grad",
}
# TFMOT 0.8.1 on tf_keras 2.21, this machine (BRIEF.md).
TFMOT_REFERENCE = (
    "| TFMOT 0.8.1 (reference) | 100M (100,663,296) | tf.function | 36 "
    "| 10,300 | 290 |"
)


def build_wrappers(num_layers, units):
    """`num_layers` built `PruneLowMagnitude(Dense(units))` wrappers."""
    import keras

    import keras_sparsity as sparsity

    wrappers = []
    for index in range(num_layers):
        wrapper = sparsity.PruneLowMagnitude(
            keras.layers.Dense(units, name=f"dense_{index}")
        )
        wrapper.build((None, units))
        wrappers.append(wrapper)
    return wrappers


def compiled(function):
    """`function` compiled as Keras compiles a train step on this backend."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jitted = jax.jit(function)

        def run(*args):
            return jax.block_until_ready(jitted(*args))

        return run
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=False)
    import torch

    def run(*args):
        with torch.no_grad():
            result = function(*args)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # CUDA calls return before they finish
        return result

    return run


def time_call(function, *args):
    """Milliseconds that one call of `function(*args)` takes."""
    start = time.perf_counter()
    function(*args)
    return 1000.0 * (time.perf_counter() - start)


def measure(name, repeats):
    """Times one pass and one mask update of model `name`; returns a dict."""
    import keras
    from keras import ops

    num_layers, units = MODELS[name]
    keras.utils.set_random_seed(0)
    wrappers = build_wrappers(num_layers, units)
    kernels = [ops.convert_to_tensor(w.pruned_weights[0]) for w in wrappers]
    target = ops.convert_to_tensor(SPARSITY, "float32")

    def one_pass(kernels):
        return [ops.sum(ops.abs(kernel)) for kernel in kernels]

    def update(kernels, sparsity):
        return [
            wrapper.compute_mask_update(0, kernel, sparsity)
            for wrapper, kernel in zip(wrappers, kernels)
        ]

    one_pass, update = compiled(one_pass), compiled(update)
    masks = update(kernels, target)
    kept = sum(int(ops.convert_to_numpy(ops.sum(mask))) for mask in masks)
    del masks
    one_pass(kernels)
    load_before = os.getloadavg()[0]
    pass_ms, update_ms = [], []
    for _ in range(repeats):
        pass_ms.append(time_call(one_pass, kernels))
        update_ms.append(time_call(update, kernels, target))
    return {
        "model": name,
        "weights": num_layers * units * units,
        "kept": kept,
        "pass_ms": pass_ms,
        "update_ms": update_ms,
        "load": [load_before, os.getloadavg()[0]],
    }


def run_backend(args):
    """In a process whose backend is `args.backend`: prints JSON results."""
    os.environ["KERAS_BACKEND"] = args.backend
    import importlib

    import keras

    framework = importlib.import_module(args.backend)
    versions = (
        f"keras {keras.__version__}, {args.backend} {framework.__version__}"
    )
    for name in args.sizes:
        result = measure(name, args.repeats[name])
        result["backend"] = args.backend
        result["versions"] = versions
        print_result(result)


def spawn_backend(backend, args):
    """Runs this script for one backend in a subprocess; returns results."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--backend",
        backend,
        "--sizes",
        *args.sizes,
        "--child",
    ]
    if args.quick:
        command.append("--quick")
    return run_child(command, backend)


def _stats(times):
    return (
        f"{min(times):,.1f} / {statistics.median(times):,.1f} / "
        f"{max(times):,.1f}"
    )


def table(results):
    lines = [
        "| backend | weights | compiled as | one pass, ms (min / median / "
        "max) | update, ms (min / median / max) | update / one pass |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = statistics.median(r["update_ms"]) / statistics.median(
            r["pass_ms"]
        )
        lines.append(
            f"| {r['backend']} | {r['model']} ({r['weights']:,}) "
            f"| {COMPILED_AS[r['backend']]} | {_stats(r['pass_ms'])} "
            f"| {_stats(r['update_ms'])} | {ratio:.1f} |"
        )
    lines.append(TFMOT_REFERENCE)
    return "\n".join(lines)


def markdown(results, args, seconds):
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    mode = "quick (smoke) run" if args.quick else "full run"
    versions = "; ".join(sorted({r["versions"] for r in results}))
    loads = ", ".join(
        f"{r['backend']}/{r['model']} {r['load'][0]:.1f}->{r['load'][1]:.1f}"
        for r in results
    )
    checks = ", ".join(
        f"{r['backend']}/{r['model']} {r['kept']:,} of {r['weights']:,}"
        for r in results
    )
    repeats = ", ".join(f"{n} {args.repeats[n]}" for n in args.sizes)
    return "\n\n".join(
        [
            "# Mask update cost at scale",
            f"{when}, {mode}, commit {revision()}; {machine()}, shared "
            f"with other jobs; Python {platform.python_version()}, "
            f"{versions}; {seconds / 60:.1f} min in all.",
            "Per call over all kernels of the model: one pass = `ops.sum("
            "ops.abs(kernel))` per kernel; update = `PruneLowMagnitude."
            f"compute_mask_update` per kernel at sparsity {SPARSITY} "
            "(unstructured magnitude). Rounds (one pass and one update "
            f"each, after a warm-up): {repeats}. 10M: 10 x Dense(1024); "
            "100M: 6 x Dense(4096). The TFMOT row is the measurement "
            "quoted in BRIEF.md (6 x Dense(4096), a full sort per kernel).",
            table(results),
            f"Weights kept by the masks (check: 20 %): {checks}. "
            f"1-min load average before->after the timed rounds: {loads}.",
        ]
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        action="append",
        help="backend to measure (repeatable); default: all three, or jax "
        "with --quick",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        choices=tuple(MODELS),
        help="models to time; default: 10M and 100M, or 10M with --quick",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: jax and 10M only (unless given), 3 rounds",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backend is None:
        args.backend = ["jax"] if args.quick else list(BACKENDS)
    if args.sizes is None:
        args.sizes = ["10M"] if args.quick else list(MODELS)
    args.repeats = {"10M": 3, "100M": 3} if args.quick else {
        "10M": 11,
        "100M": 5,
    }
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        (args.backend,) = args.backend
        run_backend(args)
        return
    start = time.perf_counter()
    results = []
    for backend in args.backend:
        print(f"measuring {backend} ...", file=sys.stderr, flush=True)
        results += spawn_backend(backend, args)
    text = markdown(results, args, time.perf_counter() - start)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
