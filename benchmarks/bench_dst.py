"""Dynamic sparse training (issue #12): static vs SET vs RigL vs gradual
magnitude pruning, trained from scratch on MNIST at 90, 95 and 98 %.

MNIST t10k split (8,000 train / 2,000 held-out test images, fixed seed, as
`benchmarks/tfmot_recipe.py`), two models: the MLP 784-300-100-10 and
TFMOT's tutorial CNN. Every run starts from the same initial weights
(drawn with NumPy from the seed) and sees the same batches (Adam 1e-3,
batch 128) for the same number of steps:

* `dense`: no pruning (the reference);
* `static`, `SET`, `RigL`, each with `allocation="uniform"` and `"erk"`:
  sparse from step 0 at the target (`ConstantSparsity(target, 0)`), a
  random initial mask; SET and RigL move `drop_fraction=0.3` of each
  kernel's weights (cosine-decayed) every `total / 25` steps until 75 % of
  training;
* `gradual`: magnitude pruning of the model while it trains from scratch,
  `PolynomialDecay(0 -> target)` over the first 65 % of the steps, masks
  every `total / 25` steps, then a recovery tail (uniform allocation, the
  TFMOT recipe; and ERK).

Reported: held-out accuracy per setting and target, the change from
dense, and whether the paper's ordering RigL >= SET > static holds (per
allocation). The kept count of every run is asserted exact. Mask update
cost and the training overhead of SET and RigL are measured by
`benchmarks/train_overhead.py --settings rigl set`.

Usage (from the repository root):

```
.venv/bin/python benchmarks/bench_dst.py --out benchmarks/results/bench_dst.md
.venv/bin/python benchmarks/bench_dst.py --quick   # smoke, < 1 min
```
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import tfmot_worker as worker
from provenance import machine
from provenance import revision
from tfmot_recipe import DEFAULT_DATA_DIR

MODELS = ("mlp300", "cnn")
MODEL_LABELS = {"mlp300": "MLP 784-300-100-10", "cnn": "tutorial CNN"}
SETTINGS = (
    ("static", "uniform"),
    ("static", "erk"),
    ("SET", "uniform"),
    ("SET", "erk"),
    ("RigL", "uniform"),
    ("RigL", "erk"),
    ("gradual", "uniform"),
    ("gradual", "erk"),
)
UPDATES = 25  # mask updates over the run
DST_END = 0.75  # of the steps: SET/RigL masks fixed after
RAMP = 0.65  # of the steps: gradual pruning reaches the target
FULL_PLAN = {"num_train": 8000, "num_test": 2000, "epochs": 10,
             "targets": [0.9, 0.95, 0.98]}
QUICK_PLAN = {"num_train": 2048, "num_test": 1024, "epochs": 2,
              "targets": [0.95]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", default="jax",
                        choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--models", nargs="+", choices=MODELS,
                        default=list(MODELS))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one target, 2 epochs of 2,048 images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.plan = dict(QUICK_PLAN if args.quick else FULL_PLAN)
    steps_per_epoch = math.ceil(args.plan["num_train"] / worker.BATCH_SIZE)
    total = args.plan["epochs"] * steps_per_epoch
    frequency = max(1, total // UPDATES)
    args.plan.update(
        total_steps=total,
        frequency=frequency,
        dst_end=int(DST_END * total),
        ramp_end=max(frequency, int(RAMP * total) // frequency * frequency),
    )
    return args


def pruning_options(sparsity, method, allocation, target, plan, seed):
    """`prune_low_magnitude` arguments of one setting."""
    if method == "gradual":
        schedule = sparsity.PolynomialDecay(
            0.0, target, begin_step=0, end_step=plan["ramp_end"],
            frequency=plan["frequency"],
        )
        return dict(pruning_schedule=schedule, allocation=allocation)
    if method == "static":
        regrowth = sparsity.StaticSparse(seed=seed)
    else:
        regrowth = getattr(sparsity, method)(
            update_frequency=plan["frequency"], drop_fraction=0.3,
            end_step=plan["dst_end"], seed=seed,
        )
    return dict(
        pruning_schedule=sparsity.ConstantSparsity(target, begin_step=0),
        allocation=allocation,
        regrowth=regrowth,
    )


def kept_counts(keras, pruned):
    from keras_sparsity.walk import pruning_wrappers

    return [
        int(np.sum(keras.ops.convert_to_numpy(mask)))
        for wrapper in pruning_wrappers(pruned)
        for mask in wrapper.masks
    ]


def expected_total(sizes, target, allocation):
    from keras_sparsity.allocation import keep_count

    if allocation == "uniform":
        return sum(keep_count(n, target) for n in sizes)
    return keep_count(sum(sizes), target)


def run_model(keras, sparsity, name, data, args):
    (x_train, y_train), (x_test, y_test) = data
    build = worker.BUILDERS[name]
    plan = args.plan
    initial = worker.initial_weights(build(keras), args.seed)
    orders = worker.epoch_orders(len(x_train), plan["epochs"], args.seed + 1)

    def train(options):
        model = build(keras)
        model.set_weights(initial)
        if options is not None:
            model = sparsity.prune_low_magnitude(model, **options)
        worker.compile_model(keras, model)
        start = time.perf_counter()
        worker.train(model, x_train, y_train, orders, [])
        wall = time.perf_counter() - start
        kept = None
        if options is not None:
            kept = kept_counts(keras, model)
            model = sparsity.strip_pruning(model)
        return model, kept, wall

    dense, _, wall = train(None)
    result = {
        "model": name,
        "dense": worker.accuracy(dense, x_test, y_test),
        "dense_wall_s": wall,
        "runs": [],
    }
    print(f"{name}: dense {result['dense']:.4f} ({wall:.1f} s)",
          file=sys.stderr, flush=True)
    for target in plan["targets"]:
        for method, allocation in SETTINGS:
            options = pruning_options(
                sparsity, method, allocation, target, plan, args.seed
            )
            model, kept, wall = train(options)
            kernels = worker.kernel_sparsity(model.get_weights())
            sizes = [k["size"] for k in kernels]
            expected = expected_total(sizes, target, allocation)
            nonzero = sum(k["size"] - k["zeros"] for k in kernels)
            if sum(kept) != expected or nonzero > expected:
                raise AssertionError(
                    f"{name} {method}/{allocation} at {target}: masks keep "
                    f"{sum(kept)} ({kept}), non-zeros {nonzero}, expected "
                    f"{expected}"
                )
            accuracy = worker.accuracy(model, x_test, y_test)
            result["runs"].append(dict(
                target=target, method=method, allocation=allocation,
                accuracy=accuracy, kept=kept, wall_s=wall,
            ))
            print(f"  {name} {target} {method:7s} {allocation:7s} "
                  f"{accuracy:.4f} ({wall:.1f} s)", file=sys.stderr,
                  flush=True)
    return result


def accuracy_table(result, targets):
    lines = [
        "| setting | " + " | ".join(f"{t:.0%}" for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for method, allocation in SETTINGS:
        cells = []
        for target in targets:
            (run,) = [
                r for r in result["runs"]
                if r["target"] == target and r["method"] == method
                and r["allocation"] == allocation
            ]
            points = 100 * (run["accuracy"] - result["dense"])
            cells.append(f"{run['accuracy']:.4f} ({points:+.1f})")
        lines.append(f"| {method}, {allocation} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ordering(result, targets):
    """Where RigL >= SET > static holds, per allocation and target."""
    lines = []
    for allocation in ("uniform", "erk"):
        for target in targets:
            acc = {
                r["method"]: r["accuracy"] for r in result["runs"]
                if r["target"] == target and r["allocation"] == allocation
            }
            holds = acc["RigL"] >= acc["SET"] > acc["static"]
            lines.append(
                f"- {allocation} {target:.0%}: RigL {acc['RigL']:.4f}, SET "
                f"{acc['SET']:.4f}, static {acc['static']:.4f}, gradual "
                f"{acc['gradual']:.4f}: "
                + ("holds" if holds else "does not hold")
            )
    return "\n".join(lines)


def markdown(results, args, versions, seconds):
    plan = args.plan
    sections = [
        "# Dynamic sparse training (issue #12)",
        f"{time.strftime('%Y-%m-%d %H:%M')}, "
        f"{'quick (smoke) run' if args.quick else 'full run'}, commit "
        f"{revision()}; {machine()}; {versions}; {seconds / 60:.1f} min. "
        f"Backend {args.backend}. {plan['num_train']} training / "
        f"{plan['num_test']} test images, {plan['epochs']} epochs "
        f"({plan['total_steps']} steps), batch {worker.BATCH_SIZE}, Adam; "
        f"masks every {plan['frequency']} steps; SET/RigL until step "
        f"{plan['dst_end']} (drop fraction 0.3, cosine); gradual pruning "
        f"reaches the target at step {plan['ramp_end']}.",
    ]
    for result in results:
        sections += [
            f"## {MODEL_LABELS[result['model']]} (dense "
            f"{result['dense']:.4f})",
            "Held-out accuracy (change from dense, in points).",
            accuracy_table(result, plan["targets"]),
            "Ordering of the RigL paper (RigL >= SET > static):",
            ordering(result, plan["targets"]),
        ]
    return "\n\n".join(sections) + "\n"


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    keras, sparsity, versions = worker.import_library("keras_sparsity")
    plan = args.plan
    print(f"plan: {json.dumps(plan)}", file=sys.stderr, flush=True)
    data = worker.load_mnist(str(args.data_dir), plan["num_train"],
                             plan["num_test"], seed=args.seed)
    results = [run_model(keras, sparsity, name, data, args)
               for name in args.models]
    text = markdown(results, args, versions, time.perf_counter() - start)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
