"""Cost of one mask update at 10M and 100M prunable weights, per backend.

A mask update recomputes, for every pruned kernel, the 0/1 mask that keeps
its `round(size * (1 - sparsity))` largest magnitudes. This script times
that work for all kernels of a model at once: `masks.magnitude_mask` per
kernel (`abs`, the keep count, the radix select of the k-th largest
magnitude on float bit patterns, the tie-break by flat index, the float32
mask), the pure function a wrapper calls at a pruning step. Two baselines
run side by side: one pass over the same weights (`ops.sum(ops.abs(w))`
per kernel), giving the ratio "update / one pass", and a mask write
(`ops.abs(w) >= t` cast to float32 per kernel, no select), giving "write /
one pass": what producing a fresh float32 mask costs by itself (on CPU,
page faults in each new 64 MB buffer). TFMOT 0.8.1 needs a full sort per
kernel: for 6 x Dense(4096) it spent 10.3 s per update here, 290 times
the 36 ms of one pass (measured for this project, see BRIEF.md).

Models (kernels only; biases are never pruned):

* 10M: 10 x Dense(1024) on 1024 features, 10,485,760 kernel weights;
* 100M: 6 x Dense(4096) on 4096 features, 100,663,296 kernel weights.

The kernels are those of built Dense layers (Glorot-uniform, seed 0; at
100M most kernels hold several weights tied with the k-th largest
magnitude, so the tie-break runs). The functions take the kernels and the
sparsity (0.8, a tensor, as the schedule gives it inside a train step) and
are compiled the way Keras runs a train step on the backend: `jax.jit`
(XLA) on JAX, `tf.function` without XLA on TensorFlow, eager (under
`torch.no_grad()`) on PyTorch. After a warm-up call of each (compilation),
`--repeats` rounds each time one pass, one update and one mask write;
min/median/max per call are printed, and the ratios of medians. Each
backend runs in its own process (Keras picks its backend once per
process). Memory: at 100M a process holds the layers, the kernels and the
masks (about 1.2 GB) plus per-kernel temporaries.

The machine is shared: absolute times move with its load (printed); the
ratios, measured side by side, are the result.

Usage (from the repository root):

```
.venv/bin/python benchmarks/mask_update.py                 # ~1 min
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
# The mask write's fixed threshold on |w|: its cost does not depend on it.
WRITE_THRESHOLD = 0.02
COMPILED_AS = {
    "jax": "jax.jit (XLA)",
    "tensorflow": "tf.function (no XLA)",
    "torch": "eager, no_grad",
}
# TFMOT 0.8.1 on tf_keras 2.21, this machine (BRIEF.md).
TFMOT_REFERENCE = (
    "| TFMOT 0.8.1 (reference) | 100M (100,663,296) | tf.function | 36 "
    "| 10,300 | | 290 | |"
)


def build_kernels(num_layers, units):
    """The kernels of `num_layers` built `Dense(units)` layers."""
    import keras
    from keras import ops

    kernels = []
    for index in range(num_layers):
        layer = keras.layers.Dense(units, name=f"dense_{index}")
        layer.build((None, units))
        kernels.append(ops.convert_to_tensor(layer.kernel))
    return kernels


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
    """Times one pass, one mask update and one mask write of model `name`;
    returns a dict."""
    import keras
    from keras import ops

    from keras_sparsity import masks

    num_layers, units = MODELS[name]
    keras.utils.set_random_seed(0)
    kernels = build_kernels(num_layers, units)
    target = ops.convert_to_tensor(SPARSITY, "float32")
    threshold = ops.convert_to_tensor(WRITE_THRESHOLD, "float32")

    def one_pass(kernels):
        return [ops.sum(ops.abs(kernel)) for kernel in kernels]

    def update(kernels, sparsity):
        return [masks.magnitude_mask(kernel, sparsity) for kernel in kernels]

    def global_update(kernels, sparsity):
        return masks.global_masks(kernels, sparsity)

    def scored_update(kernels, sparsity):
        return [masks.score_mask(ops.abs(k), sparsity) for k in kernels]

    def write(kernels, threshold):
        return [
            ops.cast(ops.greater_equal(ops.abs(kernel), threshold), "float32")
            for kernel in kernels
        ]

    one_pass, update, write, global_update, scored_update = (
        compiled(one_pass),
        compiled(update),
        compiled(write),
        compiled(global_update),
        compiled(scored_update),
    )
    new_masks = update(kernels, target)
    kept = sum(int(ops.convert_to_numpy(ops.sum(m))) for m in new_masks)
    del new_masks
    new_masks = global_update(kernels, target)
    global_kept = sum(int(ops.convert_to_numpy(ops.sum(m))) for m in new_masks)
    del new_masks
    one_pass(kernels)
    write(kernels, threshold)
    scored_update(kernels, target)
    load_before = os.getloadavg()[0]
    pass_ms, update_ms, write_ms, global_ms, scored_ms = [], [], [], [], []
    for _ in range(repeats):
        pass_ms.append(time_call(one_pass, kernels))
        update_ms.append(time_call(update, kernels, target))
        write_ms.append(time_call(write, kernels, threshold))
        global_ms.append(time_call(global_update, kernels, target))
        scored_ms.append(time_call(scored_update, kernels, target))
    return {
        "model": name,
        "weights": num_layers * units * units,
        "kept": kept,
        "global_kept": global_kept,
        "global_ms": global_ms,
        "scored_ms": scored_ms,
        "pass_ms": pass_ms,
        "update_ms": update_ms,
        "write_ms": write_ms,
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
        "max) | update, ms (min / median / max) | mask write, ms (min / "
        "median / max) | update / one pass | write / one pass |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        one_pass = statistics.median(r["pass_ms"])
        lines.append(
            f"| {r['backend']} | {r['model']} ({r['weights']:,}) "
            f"| {COMPILED_AS[r['backend']]} | {_stats(r['pass_ms'])} "
            f"| {_stats(r['update_ms'])} | {_stats(r['write_ms'])} "
            f"| {statistics.median(r['update_ms']) / one_pass:.1f} "
            f"| {statistics.median(r['write_ms']) / one_pass:.1f} |"
        )
    lines.append(TFMOT_REFERENCE)
    lines += [
        "",
        "Allocation and criteria (issue #11), same rounds: a global "
        "update (`masks.global_masks`: one ranking over all kernels) and a "
        "scored update (`masks.score_mask` on precomputed scores, the path "
        "of the saliency and movement criteria), against the per-kernel "
        "update above.",
        "",
        "| backend | weights | global update, ms (min / median / max) "
        "| global / per-kernel | scored update, ms (min / median / max) "
        "| scored / per-kernel |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        update = statistics.median(r["update_ms"])
        lines.append(
            f"| {r['backend']} | {r['model']} ({r['weights']:,}) "
            f"| {_stats(r['global_ms'])} "
            f"| {statistics.median(r['global_ms']) / update:.2f} "
            f"| {_stats(r['scored_ms'])} "
            f"| {statistics.median(r['scored_ms']) / update:.2f} |"
        )
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
        f"{r['backend']}/{r['model']} {r['kept']:,} (global "
        f"{r['global_kept']:,}) of {r['weights']:,}"
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
            "ops.abs(kernel))` per kernel; update = `masks.magnitude_mask("
            f"kernel, {SPARSITY})` per kernel (sparsity a tensor); mask "
            "write = `ops.cast(ops.abs(kernel) >= t, 'float32')` per "
            "kernel, the output of an update without the select. Rounds "
            f"(one of each, after a warm-up): {repeats}. 10M: 10 x "
            "Dense(1024); 100M: 6 x Dense(4096) kernels. The TFMOT row is "
            "the measurement quoted in BRIEF.md (6 x Dense(4096), a full "
            "sort per kernel).",
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
    args.repeats = (
        {"10M": 3, "100M": 3}
        if args.quick
        else {
            "10M": 11,
            "100M": 5,
        }
    )
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
