"""One-shot pruning (issue #14): held-out perplexity of magnitude, Wanda,
SparseGPT and OWL on a trained character transformer, with time per block
and peak memory.

The model, data and training are `examples/oneshot_shakespeare.py`'s
(imported, not copied): a pre-norm GPT-style character transformer (dim
64, 2 blocks of 4-head causal attention and a 4x GELU feed-forward)
trained on tiny Shakespeare (`../shared/data/tinyshakespeare.txt`), 8,000
windows of 64 characters, 3 epochs. Only the attention and feed-forward
kernels are pruned (the embeddings and the head stay dense), from 64
calibration windows (4 batches of 16), at 50 / 60 / 70 % and 2:4 with
magnitude, Wanda and SparseGPT, and with OWL-allocated Wanda at 70 %.
Perplexity is measured on 256 held-out windows from the last 10 % of the
text (`oneshot.perplexity`).

Measured per setting, side by side in one process:

* perplexity of the pruned copy, and its increase over dense;
* wall seconds of `oneshot.prune` (a copy, `verbose=False`); the first
  call of each method also compiles;
* peak memory added: the process's peak resident set (`VmHWM`, reset
  through `/proc/self/clear_refs` just before the call) minus its
  resident set before it, so it counts every buffer of every backend
  (tracemalloc would miss the backends' own allocations);
* from a second call with `return_summary=True`: seconds per block (mean
  and largest; a block is a top-level layer of this functional model:
  one attention layer or one feed-forward Dense), the mean
  reconstruction error `||W X - W' X|| / ||W X||` of the kernels on their
  calibration inputs, and the realised sparsity (asserted exact).

Usage (from the repository root):

```
.venv/bin/python benchmarks/bench_oneshot.py \
    --out benchmarks/results/bench_oneshot.md        # jax, about 2 min
.venv/bin/python benchmarks/bench_oneshot.py --quick  # smoke, < 1 min
.venv/bin/python benchmarks/bench_oneshot.py --backend torch
```

`--quick` (1,024 windows of 32 characters, 1 epoch, 16 calibration
windows) is a smoke run whose perplexities mean nothing.
"""

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from provenance import REPO_ROOT
from provenance import machine
from provenance import revision

sys.path.insert(0, str(REPO_ROOT / "examples"))

BACKENDS = ("jax", "tensorflow", "torch")
FULL_PLAN = dict(
    seq_len=64, num_train=8000, num_val=256, num_calibration=64, epochs=3
)
QUICK_PLAN = dict(
    seq_len=32, num_train=1024, num_val=32, num_calibration=16, epochs=1
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=BACKENDS, default="jax")
    parser.add_argument("--text", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--num-blocks", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the Markdown here"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write raw results here"
    )
    args = parser.parse_args(argv)
    args.plan = dict(QUICK_PLAN if args.quick else FULL_PLAN)
    if args.epochs is not None:
        args.plan["epochs"] = args.epochs
    return args


def _status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measured_prune(oneshot, model, calibration, **kwargs):
    """`(pruned, seconds, added peak bytes)` of one `oneshot.prune`."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    pruned = oneshot.prune(model, calibration, verbose=False, **kwargs)
    seconds = time.perf_counter() - start
    return pruned, seconds, (_status_kib("VmHWM") - before) * 1024


def run(args):
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.backend == "torch":
        import torch  # noqa: F401  (before TensorFlow, which Keras may load)
    import keras
    import numpy as np
    import oneshot_shakespeare as example

    from keras_sparsity import oneshot

    plan = args.plan
    keras.utils.set_random_seed(0)
    text = args.text or Path(example.DEFAULT_TEXT)
    (x_train, y_train), held_out, calibration, vocabulary = (
        example.load_splits(
            text,
            plan["seq_len"],
            plan["num_train"],
            plan["num_val"],
            plan["num_calibration"],
        )
    )
    start = time.perf_counter()
    model = example.train_char_transformer(
        len(vocabulary),
        plan["seq_len"],
        x_train,
        y_train,
        plan["epochs"],
        dim=args.dim,
        num_blocks=args.num_blocks,
    )
    train_seconds = time.perf_counter() - start
    dense = oneshot.perplexity(model, held_out)
    print(f"dense perplexity {dense:.3f}", file=sys.stderr, flush=True)
    settings = [
        (label, target, m_by_n, method, "uniform")
        for label, target, m_by_n in example.SETTINGS
        for method in example.METHODS
    ]
    settings.append(("70%", 0.7, None, "wanda", "owl"))
    runs = []
    for label, target, m_by_n, method, allocation in settings:
        kwargs = dict(
            method=method,
            sparsity=target,
            sparsity_m_by_n=m_by_n,
            layers=example.BLOCK_LAYERS,
            allocation=allocation,
        )
        pruned, seconds, peak = measured_prune(
            oneshot, model, calibration, **kwargs
        )
        score = oneshot.perplexity(pruned, held_out)
        _, summary = oneshot.prune(
            model, calibration, verbose=False, return_summary=True, **kwargs
        )
        check_exact(summary, target, m_by_n, method, allocation)
        errors = [r.reconstruction_error for r in summary.layers]
        block_seconds = [b.seconds for b in summary.blocks]
        runs.append(
            {
                "setting": label,
                "method": method + ("+owl" if allocation == "owl" else ""),
                "perplexity": score,
                "seconds": seconds,
                "peak_bytes": peak,
                "block_seconds_mean": float(np.mean(block_seconds)),
                "block_seconds_max": float(np.max(block_seconds)),
                "num_blocks": len(summary.blocks),
                "mean_error": float(np.mean(errors)),
                "sparsity": summary.sparsity,
                "block_sparsities": [
                    round(b.target_sparsity, 4) for b in summary.blocks
                ],
            }
        )
        print(
            f"{label:>4} {runs[-1]['method']:>10} {score:8.3f} "
            f"{seconds:6.2f} s, {peak / 2**20:6.1f} MiB, error "
            f"{runs[-1]['mean_error']:.4f}",
            file=sys.stderr,
            flush=True,
        )
    owl_rows = owl_allocation_units(
        oneshot, model, calibration, held_out, example, args.num_blocks
    )
    parameters = sum(
        int(np.prod(w.shape)) for w in model.weights if len(w.shape) >= 2
    )
    return {
        "backend": args.backend,
        "dense": dense,
        "train_seconds": train_seconds,
        "vocabulary_size": len(vocabulary),
        "num_kernel_parameters": parameters,
        "runs": runs,
        "owl": owl_rows,
        "versions": {
            "python": sys.version.split()[0],
            "keras": keras.__version__,
            args.backend: _backend_version(args.backend),
        },
    }


def owl_allocation_units(oneshot, model, calibration, held_out, example,
                         num_blocks):
    """Wanda at 70 % with OWL sparsities computed per top-level layer (what
    `prune(allocation=OutlierWeighted(M, 0.08))` does on this functional
    model) and per transformer block (the paper's unit: all kernels of
    `block_i` together, pruned block by block with `layers=`), M in 3, 5."""
    import re

    import keras

    from keras_sparsity import _compat
    from keras_sparsity.oneshot import capture
    from keras_sparsity.oneshot.matrix_view import KernelMatrix

    views = [
        KernelMatrix(layer)
        for layer in _compat.all_sublayers(model)
        if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))
        and re.search(example.BLOCK_LAYERS, layer.path)
    ]
    stats = [capture.InputStatistics(v, "norms") for v in views]
    with capture.capture(stats):
        for batch in calibration:
            model(batch)
    rows = []
    for threshold in (3.0, 5.0):
        owl = oneshot.OutlierWeighted(threshold, 0.08)
        pruned = oneshot.prune(
            model, calibration, sparsity=0.7, layers=example.BLOCK_LAYERS,
            allocation=owl, verbose=False,
        )
        rows.append({
            "unit": "top-level layer (library)",
            "threshold": threshold,
            "perplexity": oneshot.perplexity(pruned, held_out),
        })
        ratios = [
            owl.outlier_ratio([
                (v.read(), s.value)
                for v, s in zip(views, stats)
                if v.name.startswith(f"block_{block}_")
            ])
            for block in range(num_blocks)
        ]
        sparsities = owl.sparsities(ratios, 0.7)
        pruned = model
        for block, target in enumerate(sparsities):
            pruned = oneshot.prune(
                pruned, calibration, sparsity=target, verbose=False,
                layers=rf"^block_{block}_(attention|up|down)",
                inplace=block > 0,
            )
        rows.append({
            "unit": "transformer block",
            "threshold": threshold,
            "perplexity": oneshot.perplexity(pruned, held_out),
            "sparsities": [round(t, 3) for t in sparsities],
        })
        print(f"OWL M={threshold}: {rows[-2:]}", file=sys.stderr, flush=True)
    return rows


def owl_table(result):
    uniform = [
        r["perplexity"] for r in result["runs"]
        if r["setting"] == "70%" and r["method"] == "wanda"
    ][0]
    lines = [
        "| OWL unit | M | lambda | perplexity | uniform Wanda | block "
        "sparsities |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in result["owl"]:
        lines.append(
            f"| {row['unit']} | {row['threshold']:g} | 0.08 "
            f"| {row['perplexity']:.3f} | {uniform:.3f} "
            f"| {row.get('sparsities', '')} |"
        )
    return "\n".join(lines)


def _backend_version(backend):
    module = __import__(backend)
    return getattr(module, "__version__", "?")


def check_exact(summary, target, m_by_n, method, allocation):
    """Every kernel at its exact count (one-shot promises exact sparsity)."""
    for row in summary.layers:
        d_out, d_in = row.shape
        if m_by_n is not None:
            kept = d_out * (d_in // m_by_n[1]) * (m_by_n[1] - m_by_n[0])
        elif method == "wanda":
            kept = d_out * round(d_in * (1 - row.target_sparsity))
        else:
            kept = round(d_out * d_in * (1 - row.target_sparsity))
        if row.num_nonzeros != kept:
            raise AssertionError(
                f"{method}/{allocation} at {target}: {row.layer} keeps "
                f"{row.num_nonzeros} weights, expected {kept}"
            )


# ---------------------------------------------------------------- tables


def results_table(result):
    dense = result["dense"]
    lines = [
        "| sparsity | method | perplexity | + over dense | prune s | "
        "s per block (mean / max) | peak MiB added | mean rel. error |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| 0 % | dense | {dense:.3f} | | | | | |",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['setting']} | {r['method']} | {r['perplexity']:.3f} "
            f"| {r['perplexity'] - dense:+.3f} | {r['seconds']:.2f} "
            f"| {r['block_seconds_mean']:.2f} / {r['block_seconds_max']:.2f} "
            f"| {r['peak_bytes'] / 2**20:.1f} | {r['mean_error']:.4f} |"
        )
    return "\n".join(lines)


def target_checks(result):
    """The issue's three orderings, each with its verdict."""
    dense = result["dense"]
    score = {
        (r["setting"], r["method"]): r["perplexity"] for r in result["runs"]
    }
    loss = {key: value - dense for key, value in score.items()}
    magnitude = loss[("50%", "magnitude")]
    lines = []
    for method in ("wanda", "sparsegpt"):
        ratio = loss[("50%", method)] / magnitude if magnitude > 0 else 0.0
        verdict = "holds" if ratio <= 0.5 else "does not hold"
        lines.append(
            f"* 50 %: {method} loses {loss[('50%', method)]:+.3f}, "
            f"{ratio:.2f} of magnitude's {magnitude:+.3f} (target <= 0.5): "
            f"{verdict}."
        )
    sparsegpt, wanda = score[("2:4", "sparsegpt")], score[("2:4", "wanda")]
    lines.append(
        f"* 2:4: SparseGPT {sparsegpt:.3f} vs Wanda {wanda:.3f} (target "
        f"SparseGPT <= Wanda): "
        f"{'holds' if sparsegpt <= wanda else 'does not hold'}."
    )
    owl, uniform = score[("70%", "wanda+owl")], score[("70%", "wanda")]
    owl_run = [r for r in result["runs"] if r["method"] == "wanda+owl"][0]
    lines.append(
        f"* 70 %: OWL {owl:.3f} vs uniform Wanda {uniform:.3f} (target OWL "
        f"<= uniform): {'holds' if owl <= uniform else 'does not hold'}; "
        f"OWL's block sparsities {owl_run['block_sparsities']}."
    )
    return "\n".join(lines)


def markdown(result, args, seconds, loads):
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    mode = "quick (smoke) run" if args.quick else "full run"
    plan = args.plan
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    header = (
        f"{when}, {mode}, commit {revision()}, {machine()}; 1-min load "
        f"average {loads[0]:.1f} before, {loads[1]:.1f} after; "
        f"{seconds / 60:.1f} min in all ({result['train_seconds']:.0f} s "
        f"of it training).\n\n"
        f"Backend {result['backend']} ({versions}). Character transformer: "
        f"dim {args.dim}, {args.num_blocks} blocks, vocabulary "
        f"{result['vocabulary_size']}, "
        f"{result['num_kernel_parameters']:,} kernel and embedding "
        f"parameters; trained on {plan['num_train']:,} windows of "
        f"{plan['seq_len']} characters for {plan['epochs']} epochs; "
        f"{plan['num_calibration']} calibration windows; perplexity on "
        f"{plan['num_val']} held-out windows."
    )
    return "\n\n".join(
        [
            "# One-shot pruning (issue #14)",
            header,
            "## Perplexity, time and memory",
            "Prune s: wall time of `oneshot.prune` (copy included; the first "
            "call of each method compiles). Seconds per block: from a second "
            "call with `return_summary=True`, which also captures `X^T X` "
            "for magnitude and Wanda (to measure the error), so their "
            "blocks cost about what SparseGPT's capture does. Peak MiB "
            "added: `VmHWM` (reset via `/proc/self/clear_refs`) minus the "
            "resident set before the call. Mean rel. error: "
            "`||W X - W' X|| / ||W X||` averaged over the pruned kernels, on "
            "the calibration inputs each saw in the sequential run.",
            results_table(result),
            "## The issue's targets",
            target_checks(result),
            "## OWL's allocation unit",
            "Wanda at 70 %, OWL with λ = 0.08 and threshold M = 3 or 5, "
            "sparsities per top-level layer (what `prune` does on this "
            "functional model: each attention layer and each feed-forward "
            "Dense is a block) and per transformer block (the paper's unit; "
            "the blocks pruned in order with `layers=`, each at its OWL "
            "sparsity).",
            owl_table(result),
        ]
    ) + "\n"


def main(argv=None):
    args = parse_args(argv)
    loads = [os.getloadavg()[0]]
    start = time.perf_counter()
    result = run(args)
    seconds = time.perf_counter() - start
    loads.append(os.getloadavg()[0])
    text = markdown(result, args, seconds, loads)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
