"""Allocation and criteria (issue #11): uniform, global and ERK sparsity, by
magnitude, saliency and movement, on MNIST at 90-99 % sparsity.

MNIST t10k split (8,000 train / 2,000 held-out test images, fixed seed, as
`benchmarks/tfmot_recipe.py`), two models: LeNet-300-100 (the MLP
784-300-100-10, relu; kernels 784x300, 300x100, 100x10) and TFMOT's tutorial
CNN (kernels conv 3x3x1x12 and dense 2028x10). Each model is trained dense
once (initial weights drawn with NumPy from the seed, a fixed batch order);
then, for each target sparsity and each `allocation` x `criterion` of
`keras_sparsity.prune_low_magnitude`, a copy of the dense weights is
pruned and fine-tuned with the same budget: Adam (1e-3), batch 128, the
same epochs and batch order for every setting, `PolynomialDecay(0 ->
target, power 3)` ending at about 65 % of the fine-tuning steps (then a
recovery tail at the target: pruning that ends at the last step hurts,
Gale et al. 2019), masks updated every ~1/20 of the steps. TFMOT 0.8.1
(uniform magnitude, the only thing it does) runs the same recipe from the
very same dense weights and batch order, in its own virtualenv, through
`benchmarks/tfmot_worker.py`.

Reported: held-out accuracy of every run, the dense accuracy and the drop
in points, the realised sparsity over all kernels (asserted: the kept count
is exactly what the allocation promises: `round(total * (1 - s))` for
global and ERK, the sum of the per-kernel counts for uniform), the
sparsity of each kernel, and the best setting per target against dense and
against TFMOT. At 97 % every setting is fine-tuned again with two more
batch orders (`--orders`), to show how much of a difference is one run's
luck.

Usage (from the repository root; `make bench` builds both virtualenvs):

```
.venv/bin/python benchmarks/bench_allocation.py \
    --out benchmarks/results/bench_allocation.md   # jax + TFMOT, 11-19 min
.venv/bin/python benchmarks/bench_allocation.py --quick   # smoke, < 1 min
.venv/bin/python benchmarks/bench_allocation.py --backend torch --no-tfmot
```

One Keras backend per run (`--backend`, default jax): the allocation and
the criteria are backend-independent (and tested on all three backends),
and one backend keeps the full run under 20 minutes on 2 CPU cores (18.6
min with the machine shared with two test processes; 11.3 min of it
without the three batch orders at 97 %). The quick smoke run of
tensorflow and torch gives the same accuracies as jax (torch: one cell
differs in the fourth digit).

`--quick` (jax, one target, 2,048 images, 1 dense and 2 fine-tuning
epochs, no TFMOT) is a smoke run whose accuracies mean nothing.
"""

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tfmot_worker as worker  # also puts examples/ on sys.path
from provenance import machine
from provenance import revision
from tfmot_recipe import DEFAULT_DATA_DIR
from tfmot_recipe import DEFAULT_TFMOT_PYTHON
from tfmot_recipe import run_worker

BACKENDS = ("jax", "tensorflow", "torch")
MODELS = ("mlp300", "cnn")
MODEL_LABELS = {"mlp300": "MLP 784-300-100-10", "cnn": "tutorial CNN"}
KERNELS = {
    "mlp300": "784x300, 300x100, 100x10",
    "cnn": "conv 3x3x1x12, dense 2028x10",
}
ALLOCATIONS = ("uniform", "global", "erk")
CRITERIA = ("magnitude", "saliency", "movement")
DETAIL_TARGET = 0.97  # per-kernel table and the 5-point check
INITIAL_SPARSITY = 0.0
RAMP_FRACTION = 0.65  # of the fine-tuning steps; the rest is recovery
MASK_UPDATES = 20  # frequency = fine-tuning steps / MASK_UPDATES

FULL_PLAN = {
    "num_train": 8000,
    "num_test": 2000,
    "dense_epochs": 10,
    "fine_tune_epochs": 8,
    "targets": [0.9, 0.95, 0.97, 0.99],
    "orders": 3,  # batch orders of the fine-tuning at DETAIL_TARGET
}
QUICK_PLAN = {
    "num_train": 2048,
    "num_test": 1024,
    "dense_epochs": 1,
    "fine_tune_epochs": 2,
    "targets": [0.97],
    "orders": 1,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=BACKENDS, default="jax")
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS)
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--tfmot-python", type=Path, default=DEFAULT_TFMOT_PYTHON,
        help="Python of the TFMOT virtualenv (default: .venv-tfmot)",
    )
    parser.add_argument(
        "--no-tfmot", action="store_true",
        help="leave TFMOT out (always left out with --quick)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the Markdown here"
    )
    parser.add_argument(
        "--json", type=Path, default=None,
        help="also write the raw results here",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: one target (0.97), 2,048 training images, 1 dense "
        "and 2 fine-tuning epochs, no TFMOT (< 1 min)",
    )
    parser.add_argument(
        "--orders", type=int, default=None,
        help="fine-tuning batch orders per setting at 0.97, for the spread "
        "(default 3, 1 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.plan = dict(QUICK_PLAN if args.quick else FULL_PLAN)
    if args.orders is not None:
        if args.orders < 1:
            parser.error(f"--orders must be >= 1. Received: {args.orders}")
        args.plan["orders"] = args.orders
    args.tfmot = not (args.quick or args.no_tfmot)
    if args.tfmot and not args.tfmot_python.exists():
        parser.error(
            f"--tfmot-python {args.tfmot_python} does not exist: build it "
            "with `make .venv-tfmot/.installed`, or pass --no-tfmot."
        )
    steps_per_epoch = math.ceil(args.plan["num_train"] / worker.BATCH_SIZE)
    total = args.plan["fine_tune_epochs"] * steps_per_epoch
    frequency = max(1, round(total / MASK_UPDATES))
    # The ramp ends on a mask update of both libraries (a multiple of
    # `frequency`, counted in batches from 1).
    ramp = max(frequency, round(RAMP_FRACTION * total / frequency) * frequency)
    args.plan.update(
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        frequency=frequency,
        ramp_steps=ramp,
    )
    return args


def import_keras(backend):
    """Selects `backend`, then imports Keras and keras_sparsity."""
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if backend == "torch":
        import torch  # noqa: F401  (before TensorFlow, which Keras may load)
    keras, sparsity, versions = worker.import_library("keras_sparsity")
    if keras.backend.backend() != backend:
        raise RuntimeError(
            f"Keras was already imported with backend "
            f"{keras.backend.backend()!r}; run this script in a fresh "
            f"process. Received: --backend={backend}"
        )
    return keras, sparsity, versions


def expected_kept(sizes, target, allocation):
    """The kept count `allocation` promises over kernels of `sizes`."""
    from keras_sparsity.allocation import keep_count

    if allocation == "uniform":
        return sum(keep_count(n, target) for n in sizes)
    return keep_count(sum(sizes), target)


def mask_kept(keras, pruned):
    """Ones in every mask of the pruned model, kernel by kernel."""
    from keras_sparsity.walk import pruning_wrappers

    return [
        int(np.sum(keras.ops.convert_to_numpy(mask)))
        for wrapper in pruning_wrappers(pruned)
        for mask in wrapper.masks
    ]


def prune_run(keras, sparsity, build, dense_weights, data, target,
              allocation, criterion, args, order=0):
    """Prunes a copy of `dense_weights`, fine-tunes, returns the results.

    `order` 0 is the batch order of every setting (and of TFMOT); others
    are further orders, drawn from the seed, for the spread."""
    (x_train, y_train), (x_test, y_test) = data
    plan = args.plan
    schedule = sparsity.PolynomialDecay(
        initial_sparsity=INITIAL_SPARSITY,
        final_sparsity=target,
        begin_step=0,
        end_step=worker.end_step(
            "keras_sparsity", plan["steps_per_epoch"], 0, plan["ramp_steps"]
        ),
        frequency=plan["frequency"],
    )
    model = build(keras)
    model.set_weights(dense_weights)
    start = time.perf_counter()
    pruned = sparsity.prune_low_magnitude(
        model,
        pruning_schedule=schedule,
        allocation=allocation,
        criterion=criterion,
    )
    worker.compile_model(keras, pruned)  # wrapped in a SparsityOptimizer
    orders = worker.epoch_orders(
        len(x_train), plan["fine_tune_epochs"], args.seed + 2 + 100 * order
    )
    worker.train(pruned, x_train, y_train, orders, [])
    masks = mask_kept(keras, pruned)
    stripped = sparsity.strip_pruning(pruned)
    wall = time.perf_counter() - start
    kernels = worker.kernel_sparsity(stripped.get_weights())
    sizes = [k["size"] for k in kernels]
    kept = sum(k["size"] - k["zeros"] for k in kernels)
    expected = expected_kept(sizes, target, allocation)
    if sum(masks) != expected or kept != expected:
        raise AssertionError(
            f"{allocation}/{criterion} at {target}: expected {expected} "
            f"kept weights over {sum(sizes)}, the masks keep {sum(masks)} "
            f"({masks}) and the stripped kernels {kept} non-zeros."
        )
    return {
        "target": target,
        "allocation": allocation,
        "criterion": criterion,
        "order": order,
        "accuracy": worker.accuracy(stripped, x_test, y_test),
        "kernels": kernels,
        "kept": kept,
        "expected_kept": expected,
        "sparsity": 1 - kept / sum(sizes),
        "wall_s": wall,
    }


def run_model(keras, sparsity, model_name, data, args, weights_dir):
    """Dense training, then every target x allocation x criterion."""
    (x_train, y_train), (x_test, y_test) = data
    build = worker.BUILDERS[model_name]
    model = build(keras)
    model.set_weights(worker.initial_weights(model, args.seed))
    worker.compile_model(keras, model)
    orders = worker.epoch_orders(
        len(x_train), args.plan["dense_epochs"], args.seed + 1
    )
    wall = worker.train(model, x_train, y_train, orders, [])
    dense_weights = model.get_weights()
    np.savez(os.path.join(weights_dir, f"{model_name}.npz"), *dense_weights)
    result = {
        "model": model_name,
        "dense": {
            "accuracy": worker.accuracy(model, x_test, y_test),
            "wall_s": wall,
        },
        "pruned": [],
        "repeats": [],  # further batch orders at DETAIL_TARGET
    }
    print(
        f"{model_name}: dense {result['dense']['accuracy']:.4f} "
        f"({wall:.1f} s)", file=sys.stderr, flush=True,
    )
    for target in args.plan["targets"]:
        for allocation in ALLOCATIONS:
            for criterion in CRITERIA:
                run = prune_run(
                    keras, sparsity, build, dense_weights, data, target,
                    allocation, criterion, args,
                )
                result["pruned"].append(run)
                print(
                    f"  {model_name} {target} {allocation:7s} "
                    f"{criterion:9s} {run['accuracy']:.4f} "
                    f"({run['wall_s']:.1f} s)",
                    file=sys.stderr, flush=True,
                )
    if not any(math.isclose(t, DETAIL_TARGET) for t in args.plan["targets"]):
        return result
    for order in range(1, args.plan["orders"]):
        for allocation in ALLOCATIONS:
            for criterion in CRITERIA:
                run = prune_run(
                    keras, sparsity, build, dense_weights, data,
                    DETAIL_TARGET, allocation, criterion, args, order,
                )
                result["repeats"].append(run)
                print(
                    f"  {model_name} {DETAIL_TARGET} {allocation:7s} "
                    f"{criterion:9s} order {order}: {run['accuracy']:.4f} "
                    f"({run['wall_s']:.1f} s)",
                    file=sys.stderr, flush=True,
                )
    return result


def run_tfmot(args, weights_dir, directory):
    """TFMOT's uniform magnitude pruning, same recipe, same dense weights."""
    plan = args.plan
    worker_plan = {
        "dense_epochs": plan["dense_epochs"],  # unused: weights are given
        "ramp_epochs": 1,  # unused: --ramp-steps
        "recipe_epochs": plan["fine_tune_epochs"],
        "fine_tune_epochs": plan["fine_tune_epochs"],
        "targets": plan["targets"],
        "num_train": plan["num_train"],
        "num_test": plan["num_test"],
        "initial_sparsity": INITIAL_SPARSITY,
        "ramp_steps": plan["ramp_steps"],
        "frequency": plan["frequency"],
        "dense_weights_dir": weights_dir,
    }
    namespace = argparse.Namespace(
        tfmot_python=args.tfmot_python,
        models=args.models,
        data_dir=args.data_dir,
        seed=args.seed,
        plan=worker_plan,
    )
    start = time.perf_counter()
    result = run_worker("tfmot", namespace, directory)
    result["wall_s"] = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- tables


def _header(*columns):
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]


def _points(dense, accuracy):
    return 100.0 * (dense - accuracy)


def _tfmot_runs(tfmot, model_name):
    if tfmot is None:
        return {}, None
    for entry in tfmot["models"]:
        if entry["model"] == model_name:
            return (
                {run["target"]: run for run in entry["pruned"]},
                entry["dense"]["accuracy"],
            )
    return {}, None


def _tfmot_sparsity(run):
    zeros = sum(k["zeros"] for k in run["kernels"])
    return zeros / sum(k["size"] for k in run["kernels"])


def _cell(dense, accuracy):
    return f"{accuracy:.4f} ({-_points(dense, accuracy):+.1f})"


def accuracy_table(result, tfmot):
    """Rows target x allocation, columns the criteria (and TFMOT)."""
    dense = result["dense"]["accuracy"]
    tfmot_runs, _ = _tfmot_runs(tfmot, result["model"])
    columns = ["target", "allocation", *CRITERIA]
    if tfmot is not None:
        columns.append("TFMOT (magnitude)")
    lines = _header(*columns)
    runs = {
        (r["target"], r["allocation"], r["criterion"]): r
        for r in result["pruned"]
    }
    targets = sorted({r["target"] for r in result["pruned"]})
    for target in targets:
        for allocation in ALLOCATIONS:
            cells = [
                _cell(dense, runs[(target, allocation, c)]["accuracy"])
                for c in CRITERIA
            ]
            if tfmot is not None:
                run = tfmot_runs.get(target)
                cells.append(
                    _cell(dense, run["accuracy"])
                    if allocation == "uniform" and run else ""
                )
            lines.append(
                f"| {target:.2f} | {allocation} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


def best_table(results, tfmot):
    lines = _header(
        "model", "target", "dense", "best setting", "best acc",
        "drop (points)", "uniform magnitude", "TFMOT", "TFMOT sparsity",
        "best - TFMOT (points)",
    )
    for result in results:
        dense = result["dense"]["accuracy"]
        tfmot_runs, _ = _tfmot_runs(tfmot, result["model"])
        for target in sorted({r["target"] for r in result["pruned"]}):
            runs = [r for r in result["pruned"] if r["target"] == target]
            best = max(runs, key=lambda r: r["accuracy"])
            plain = next(
                r for r in runs
                if r["allocation"] == "uniform"
                and r["criterion"] == "magnitude"
            )
            run = tfmot_runs.get(target)
            tf_cells = (
                [
                    f"{run['accuracy']:.4f}",
                    f"{_tfmot_sparsity(run):.4f}",
                    f"{100 * (best['accuracy'] - run['accuracy']):+.1f}",
                ]
                if run else ["n/a", "n/a", "n/a"]
            )
            lines.append(
                f"| {result['model']} | {target:.2f} | {dense:.4f} "
                f"| {best['allocation']} / {best['criterion']} "
                f"| {best['accuracy']:.4f} "
                f"| {_points(dense, best['accuracy']):.1f} "
                f"| {plain['accuracy']:.4f} | " + " | ".join(tf_cells) + " |"
            )
    return "\n".join(lines)


def kernel_table(result, target, tfmot):
    lines = _header(
        "allocation", "criterion", "acc", "sparsity per kernel", "all kernels"
    )
    for run in result["pruned"]:
        if run["target"] != target:
            continue
        per_kernel = ", ".join(f"{k['sparsity']:.4f}" for k in run["kernels"])
        lines.append(
            f"| {run['allocation']} | {run['criterion']} "
            f"| {run['accuracy']:.4f} | {per_kernel} "
            f"| {run['sparsity']:.4f} |"
        )
    run = _tfmot_runs(tfmot, result["model"])[0].get(target)
    if run:
        per_kernel = ", ".join(f"{k['sparsity']:.4f}" for k in run["kernels"])
        lines.append(
            f"| TFMOT uniform | magnitude | {run['accuracy']:.4f} "
            f"| {per_kernel} | {_tfmot_sparsity(run):.4f} |"
        )
    return "\n".join(lines)


def all_runs_table(results):
    lines = _header(
        "model", "target", "allocation", "criterion", "acc", "drop (points)",
        "kept / expected", "sparsity", "sparsity per kernel", "wall s",
    )
    for result in results:
        dense = result["dense"]["accuracy"]
        for run in result["pruned"]:
            per_kernel = ", ".join(
                f"{k['sparsity']:.4f}" for k in run["kernels"]
            )
            lines.append(
                f"| {result['model']} | {run['target']:.2f} "
                f"| {run['allocation']} | {run['criterion']} "
                f"| {run['accuracy']:.4f} "
                f"| {_points(dense, run['accuracy']):.1f} "
                f"| {run['kept']:,} / {run['expected_kept']:,} "
                f"| {run['sparsity']:.4f} | {per_kernel} "
                f"| {run['wall_s']:.1f} |"
            )
    return "\n".join(lines)


def _detail_accuracies(result):
    """`{(allocation, criterion): [accuracy per batch order]}` at
    DETAIL_TARGET, order 0 first."""
    found = {}
    for run in sorted(
        result["pruned"] + result["repeats"], key=lambda r: r["order"]
    ):
        if math.isclose(run["target"], DETAIL_TARGET):
            key = (run["allocation"], run["criterion"])
            found.setdefault(key, []).append(run["accuracy"])
    return found


def spread_table(result, tfmot):
    found = _detail_accuracies(result)
    count = max(len(v) for v in found.values())
    dense = result["dense"]["accuracy"]
    lines = _header(
        "allocation", "criterion", *[f"order {i}" for i in range(count)],
        "mean", "min - max", "mean drop (points)",
    )
    for (allocation, criterion), accuracies in found.items():
        mean = sum(accuracies) / len(accuracies)
        lines.append(
            f"| {allocation} | {criterion} | "
            + " | ".join(f"{a:.4f}" for a in accuracies)
            + f" | {mean:.4f} | {min(accuracies):.4f} - "
            f"{max(accuracies):.4f} | {_points(dense, mean):.1f} |"
        )
    run = _tfmot_runs(tfmot, result["model"])[0].get(DETAIL_TARGET)
    if run:
        lines.append(
            f"| TFMOT uniform | magnitude | {run['accuracy']:.4f} |"
            + " |" * (count + 2)
        )
    return "\n".join(lines)


def within_five(results):
    """Sentences: at DETAIL_TARGET, is the best setting within 5 points?

    The best setting by its mean over the batch orders run (one, or
    `orders`)."""
    lines = []
    for result in results:
        dense = result["dense"]["accuracy"]
        found = _detail_accuracies(result)
        if not found:
            continue
        (allocation, criterion), accuracies = max(
            found.items(), key=lambda item: sum(item[1]) / len(item[1])
        )
        mean = sum(accuracies) / len(accuracies)
        drop = _points(dense, mean)
        verdict = "holds" if drop <= 5.0 else "does not hold"
        over = (
            f"mean of {len(accuracies)} batch orders {mean:.4f} "
            f"({min(accuracies):.4f} - {max(accuracies):.4f})"
            if len(accuracies) > 1 else f"{mean:.4f}"
        )
        lines.append(
            f"* {MODEL_LABELS[result['model']]}: best at "
            f"{DETAIL_TARGET:.0%} is {allocation} / {criterion}, {over} "
            f"against dense {dense:.4f}: {drop:.1f} points, so \"within 5 "
            f"points of dense\" {verdict}."
        )
    return "\n".join(lines)


NOTES = """\
* **Budget.** Every setting of a model starts from the same dense weights
  and fine-tunes for the same number of steps over the same batch order
  (TFMOT too); only `allocation` and `criterion` change. One seed and,
  but at 97 %, one batch order: with 2,000 test images one standard error
  of an accuracy near 0.95 is about 0.5 points, and at high sparsity the
  batch order alone moves a fragile setting (uniform magnitude) by 10-20
  points (section 4), so read single differences of a few points with
  care.
* **Schedule and step counting.** `PolynomialDecay(0 -> target, power=3,
  begin_step=0)`, masks updated every `frequency` steps, ending at the
  batch given above (a multiple of `frequency`, counted from 1). TFMOT
  counts its steps from 1 and is given `end_step` = that batch;
  keras_sparsity counts optimizer steps from 0 and is given one less
  (`tfmot_worker.end_step`), so both reach the target on the same batch,
  and TFMOT's realised sparsity is its target (up to its tie rule).
* **Allocation.** `uniform`: every kernel at the target (TFMOT's only
  mode). `global`: one ranking over all kernels of the model. `erk`:
  Erdős–Rényi-Kernel densities (`eps * sum(shape) / prod(shape)`, capped
  at 1), so small kernels (the 100x10 output layer, the 108-weight
  convolution) stay denser. The kept count is asserted for every run
  from the masks and from the stripped kernels: `round(total * (1 - s))`
  for `global` and `erk`, the sum of each kernel's `round(n * (1 - s))`
  for `uniform`.
* **Criteria.** `magnitude`: |w|. `saliency`: |w * g|, exponential moving
  average (decay 0.9). `movement`: -sum(w * g) over the steps (Sanh et
  al., 2020). The scores of both gradient criteria accumulate from the
  first fine-tuning step; a weight pruned once stays pruned.
* **TFMOT** (0.8.1 on `tf_keras` 2.21, `.venv-tfmot`) prunes the dense
  weights trained here (handed over as `.npz`; its "dense" accuracy is
  those weights evaluated in `tf_keras`), with the same schedule, batch
  order and optimizer. It masks in the forward pass and keeps weights tied
  with the threshold; see `benchmarks/results/tfmot_recipe.md` for the
  differences in method."""


def _versions(versions, tfmot):
    lines = [
        "* keras_sparsity: "
        + ", ".join(f"{name} {v}" for name, v in versions.items())
    ]
    if tfmot is not None:
        lines.append(
            "* TFMOT: "
            + ", ".join(f"{n} {v}" for n, v in tfmot["versions"].items())
        )
    return "\n".join(lines)


def markdown(results, tfmot, args, versions, seconds, loads):
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    plan = args.plan
    mode = "quick (smoke) run" if args.quick else "full run"
    kernels = "; ".join(
        f"{MODEL_LABELS[r['model']]}: {KERNELS[r['model']]}" for r in results
    )
    dense = ", ".join(
        f"{MODEL_LABELS[r['model']]} {r['dense']['accuracy']:.4f}"
        for r in results
    )
    if tfmot is not None:
        checks = ", ".join(
            f"{MODEL_LABELS[e['model']]} {e['dense']['accuracy']:.4f}"
            for e in tfmot["models"]
        )
        dense += f" (the same weights in tf_keras: {checks})"
    tfmot_line = (
        f" TFMOT {tfmot['wall_s'] / 60:.1f} min of it."
        if tfmot is not None else " TFMOT not run."
    )
    header = (
        f"{when}, {mode}, commit {revision()}, {machine()}; 1-min load "
        f"average {loads[0]:.1f} before, {loads[1]:.1f} after; "
        f"{seconds / 60:.1f} min in all;{tfmot_line}\n\n"
        f"Backend {args.backend}. MNIST t10k split, {plan['num_train']:,} "
        f"train / {plan['num_test']:,} held-out test (seed {args.seed}), "
        f"batch {worker.BATCH_SIZE}, Adam (1e-3). Dense: "
        f"{plan['dense_epochs']} epochs. Fine-tuning per setting: "
        f"{plan['fine_tune_epochs']} epochs = {plan['total_steps']} steps; "
        f"`PolynomialDecay({INITIAL_SPARSITY:g} -> target, power=3)` from "
        f"step 0 to batch {plan['ramp_steps']} "
        f"({plan['ramp_steps'] / plan['total_steps']:.0%} of the steps), "
        f"then {plan['total_steps'] - plan['ramp_steps']} steps of recovery "
        f"at the target; masks updated every {plan['frequency']} steps.\n\n"
        f"Kernels: {kernels}. Dense held-out accuracy: {dense}.\n\n"
        f"{_versions(versions, tfmot)}"
    )
    sections = [
        "# Allocation and criteria (issue #11)",
        header,
        "## 1. Best setting per target",
        "Best of the 9 keras_sparsity settings against dense, against "
        "our uniform magnitude (TFMOT's method) and against TFMOT itself; "
        "drop = dense minus best, in points.",
        best_table(results, tfmot),
        within_five(results),
        "## 2. Held-out accuracy of every setting",
        "Each cell: accuracy (change from dense, in points).",
    ]
    for result in results:
        sections += [
            f"### {MODEL_LABELS[result['model']]} (dense "
            f"{result['dense']['accuracy']:.4f})",
            accuracy_table(result, tfmot),
        ]
    sections.append(f"## 3. Sparsity per kernel at {DETAIL_TARGET:.0%}")
    for result in results:
        if not any(
            math.isclose(r["target"], DETAIL_TARGET) for r in result["pruned"]
        ):
            continue
        sections += [
            f"### {MODEL_LABELS[result['model']]} "
            f"({KERNELS[result['model']]})",
            kernel_table(result, DETAIL_TARGET, tfmot),
        ]
    if any(result["repeats"] for result in results):
        sections += [
            f"## 4. Spread over batch orders at {DETAIL_TARGET:.0%}",
            f"Every setting again from the same dense weights, with "
            f"{args.plan['orders'] - 1} more fine-tuning batch orders "
            "(order 0 is the one of every other table, and TFMOT's): how "
            "much of a difference between settings is the luck of one "
            "run.",
        ]
        for result in results:
            sections += [
                f"### {MODEL_LABELS[result['model']]} (dense "
                f"{result['dense']['accuracy']:.4f})",
                spread_table(result, tfmot),
            ]
    number = 5 if any(result["repeats"] for result in results) else 4
    sections += [
        f"## {number}. Every run",
        "Kept weights counted in the stripped kernels (and in the masks "
        "before stripping: the same); wall s = prune, fine-tune and strip.",
        all_runs_table(results),
        "## Method",
        NOTES,
    ]
    return "\n\n".join(sections) + "\n"


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    keras, sparsity, versions = import_keras(args.backend)
    keras.utils.set_random_seed(args.seed)
    plan = args.plan
    print(
        f"plan: {json.dumps(plan)}; backend {args.backend}",
        file=sys.stderr, flush=True,
    )
    data = worker.load_mnist(
        str(args.data_dir), plan["num_train"], plan["num_test"],
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as directory:
        results = [
            run_model(keras, sparsity, name, data, args, directory)
            for name in args.models
        ]
        tfmot = run_tfmot(args, directory, directory) if args.tfmot else None
    loads = (load_before, os.getloadavg()[0])
    text = markdown(
        results, tfmot, args, versions, time.perf_counter() - start, loads
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"keras_sparsity": results, "tfmot": tfmot}, indent=1)
        )


if __name__ == "__main__":
    main()
