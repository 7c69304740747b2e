"""TFMOT's pruning tutorial recipe, keras_sparsity and TFMOT side by side.

The recipe of TFMOT's "Pruning in Keras" tutorial on MNIST (8,000 training
and 2,000 test images of the t10k split, fixed seed), for the tutorial CNN
and a 784-1024-1024-10 MLP: 4 dense epochs, then `PolynomialDecay(0.5 ->
0.8, begin_step=0, end_step=<steps of 2 epochs>)` for 2 epochs, batch 128,
Adam. Run by keras_sparsity on each Keras 3 backend (jax, tensorflow,
torch) and by `tensorflow-model-optimization` 0.8.1 on `tf_keras` 2.21, each
in its own process (`benchmarks/tfmot_worker.py`), which hands back JSON.
Then the same with final sparsity 0.9 and 0.95 (4 fine-tuning epochs, the
schedule still ending after 2), each pruning a copy of the dense weights
trained once per library and model. Both libraries start from the same
initial weights (drawn with NumPy from the seed) and see the batches in
the same order.

Reported: dense and pruned accuracy; realised sparsity per kernel; per-step
time (min/median/max over the full batches of each phase) dense and pruned,
and the ratio of the medians; wall time of the pruning phase; and the
sizes of the stripped model: its `.keras` file, that file zipped with
DEFLATE (the tutorial's measure), the information-theoretic bound of its
weights, and keras_sparsity's `save_compressed` file, with ratios to the
dense model.

Usage (from the repository root; `make bench` builds both virtualenvs):

```
.venv/bin/python benchmarks/tfmot_recipe.py \
    --out benchmarks/results/tfmot_recipe.md
.venv/bin/python benchmarks/tfmot_recipe.py --quick          # jax, smoke
.venv/bin/python benchmarks/tfmot_recipe.py --libraries torch tfmot --models cnn
```

TFMOT runs in `.venv-tfmot` (`--tfmot-python`) with `TF_USE_LEGACY_KERAS=1`:
`tensorflow-cpu==2.21.0`, `tf-keras==2.21.0`,
`tensorflow-model-optimization==0.8.1`.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import machine
from provenance import revision

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER = REPO_ROOT / "benchmarks" / "tfmot_worker.py"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"
DEFAULT_TFMOT_PYTHON = REPO_ROOT / ".venv-tfmot" / "bin" / "python"
LIBRARIES = ("jax", "tensorflow", "torch", "tfmot")
MODELS = ("cnn", "mlp")
KERNELS = {
    "cnn": "conv 3x3x1x12, dense 2028x10",
    "mlp": "784x1024, 1024x1024, 1024x10",
}

NOTES = """\
How the two libraries differ in method (the recipe is the same):

* **Step counting.** TFMOT counts each wrapper's training calls from 1, so
  its first batch is step 1 and the tutorial's `end_step` = steps of 2
  epochs (126 for 8,000 images) is the last batch of epoch 2.
  keras_sparsity counts optimizer updates from 0, so the same batch is its
  step 125, which is the `end_step` it is given here (with `end_step=126`
  its final update would fall on the first batch of an epoch 3 that the
  recipe does not run).
* **When masks are updated** (`frequency=100`, the default in both).
  keras_sparsity updates at steps 0 (0.5), 100 and at `end_step` (the final
  sparsity, always). TFMOT never sees step 0, so it trains unpruned for 99
  batches and prunes once, at step 100, to `PolynomialDecay(100/126)`:
  0.7974 for a 0.8 target (0.8965 for 0.9, 0.9460 for 0.95); 126 is not a
  multiple of 100, so the final sparsity is never applied, also not during
  the later fine-tuning epochs, which are past `end_step`.
* **Where masks act.** TFMOT multiplies each weight by its mask in the
  forward pass of every training call (and again at epoch end, in
  `UpdatePruningStep`); keras_sparsity applies the mask in the optimizer
  step, right after the update, so the weights are exactly sparse after
  every step.
* **Kept weights.** TFMOT keeps every weight tied with the threshold (so
  sometimes more than `round(n * (1 - s))`); keras_sparsity keeps exactly
  that many, ties broken by flat index.
* **Execution.** keras_sparsity runs with Keras 3's default compilation
  (XLA on JAX, a `tf.function` on TensorFlow, eager PyTorch); TFMOT with
  `tf_keras`'s (a `tf.function`, no XLA). `UpdatePruningStep` is passed to
  both (it is a no-op check in keras_sparsity).
* **Timing.** Each step is timed by the same callback from
  `on_train_batch_begin` to `on_train_batch_end` (which makes both Keras
  versions wait for the step's results); the first batch of each phase
  (compilation) and the partial last batch of each epoch are left out.
  Dense and pruned phases run one after the other, not interleaved, so load
  drift on a shared machine moves the ratio; `benchmarks/train_overhead.py`
  measures the step-time ratio interleaved.
* **Files.** Both libraries save the stripped weights in a fresh,
  uncompiled model (no optimizer slots) with their own `.keras` format (a
  stored zip of `config.json`, `metadata.json` and `model.weights.h5`;
  for `tf_keras` its Keras-v3 `.keras` format, not `.h5`). "zipped" is that
  file in a DEFLATE zip, as in TFMOT's tutorial. The bound is computed from
  the NumPy weights the same way for both: per tensor of `n` entries with
  `k` non-zero, `n * H(k / n)` bits for the mask plus 32 bits per kept
  value (a dense tensor costs 32 bits per entry). TFMOT's stripped weights
  hold `weight * 0`, which is `-0.0` for negative weights (about half the
  pruned ones, checked apart from this script); DEFLATE then sees two zero
  patterns at random, which lowers its ratio. keras_sparsity writes
  `+0.0`."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--libraries",
        nargs="+",
        choices=LIBRARIES,
        default=None,
        help="keras_sparsity backends and/or tfmot (default: all four, or "
        "jax with --quick)",
    )
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS)
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--tfmot-python", type=Path, default=DEFAULT_TFMOT_PYTHON,
        help="Python of the TFMOT virtualenv (default: .venv-tfmot)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the Markdown here"
    )
    parser.add_argument(
        "--json", type=Path, default=None,
        help="also write the workers' raw results here",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: jax only, 2,048 training images, 1 dense and 1 "
        "pruning epoch, target 0.8",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.libraries is None:
        args.libraries = ["jax"] if args.quick else list(LIBRARIES)
    args.plan = QUICK_PLAN if args.quick else FULL_PLAN
    if "tfmot" in args.libraries and not args.tfmot_python.exists():
        parser.error(
            f"--tfmot-python {args.tfmot_python} does not exist: build it "
            "with `make .venv-tfmot/.installed`, or leave tfmot out of "
            "--libraries."
        )
    return args


FULL_PLAN = {
    "dense_epochs": 4,
    "ramp_epochs": 2,
    "recipe_epochs": 2,
    "fine_tune_epochs": 4,
    "targets": [0.8, 0.9, 0.95],
    "num_train": 8000,
    "num_test": 2000,
}
QUICK_PLAN = {
    "dense_epochs": 1,
    "ramp_epochs": 1,
    "recipe_epochs": 1,
    "fine_tune_epochs": 1,
    "targets": [0.8],
    "num_train": 2048,
    "num_test": 1024,
}


def worker_args(plan):
    """The worker's command-line flags for `plan`."""
    flags = []
    for key, value in plan.items():
        values = value if isinstance(value, list) else [value]
        flags += ["--" + key.replace("_", "-"), *map(str, values)]
    return flags


def run_worker(library, args, directory):
    """Runs one library's worker in a subprocess; returns its results."""
    json_out = os.path.join(directory, f"{library}.json")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if library == "tfmot":
        python = str(args.tfmot_python)
        env["TF_USE_LEGACY_KERAS"] = "1"
        worker_library = "tfmot"
    else:
        python = sys.executable
        env["KERAS_BACKEND"] = library
        worker_library = "keras_sparsity"
    command = [
        python, str(WORKER),
        "--library", worker_library,
        "--models", *args.models,
        "--data-dir", str(args.data_dir),
        "--seed", str(args.seed),
        "--json-out", json_out,
        *worker_args(args.plan),
    ]
    print(f"running {library} ...", file=sys.stderr, flush=True)
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(
            f"The {library} worker failed with exit code "
            f"{completed.returncode}: {' '.join(command)}"
        )
    with open(json_out) as f:
        return json.load(f)


def _ms(stats):
    return f"{stats['min']:.1f}/{stats['median']:.1f}/{stats['max']:.1f}"


def _kernels(run):
    return ", ".join(f"{k['sparsity']:.4f}" for k in run["kernels"])


def _overall(run):
    zeros = sum(k["zeros"] for k in run["kernels"])
    size = sum(k["size"] for k in run["kernels"])
    return zeros / size


def _rows(results):
    """`(model, library label, model result)` in table order."""
    for model in MODELS:
        for result in results:
            for entry in result["models"]:
                if entry["model"] == model:
                    yield model, result["label"], entry


def _header(*columns):
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]


def recipe_table(results):
    lines = _header(
        "model", "library", "dense acc", "pruned acc", "sparsity per kernel",
        "all kernels", "dense ms/step min/med/max",
        "pruned ms/step min/med/max", "step ratio", "pruning wall s",
    )
    for model, label, entry in _rows(results):
        dense, run = entry["dense"], entry["pruned"][0]
        ratio = run["step_ms"]["median"] / dense["step_ms"]["median"]
        lines.append(
            f"| {model} | {label} | {dense['accuracy']:.4f} "
            f"| {run['accuracy']:.4f} | {_kernels(run)} "
            f"| {_overall(run):.4f} | {_ms(dense['step_ms'])} "
            f"| {_ms(run['step_ms'])} | {ratio:.3f} | {run['wall_s']:.1f} |"
        )
    return "\n".join(lines)


def sparsity_table(results):
    lines = _header(
        "model", "library", "target", "epochs", "dense acc", "pruned acc",
        "sparsity per kernel", "all kernels", "step ratio", "pruning wall s",
    )
    for model, label, entry in _rows(results):
        dense = entry["dense"]
        for run in entry["pruned"]:
            ratio = run["step_ms"]["median"] / dense["step_ms"]["median"]
            lines.append(
                f"| {model} | {label} | {run['target']} | {run['epochs']} "
                f"| {dense['accuracy']:.4f} | {run['accuracy']:.4f} "
                f"| {_kernels(run)} | {_overall(run):.4f} | {ratio:.3f} "
                f"| {run['wall_s']:.1f} |"
            )
    return "\n".join(lines)


def _size(value, reference):
    return f"{value:,} ({reference / value:.2f}x)"


def compression_table(results):
    lines = _header(
        "model", "library", "weights", ".keras bytes", "zipped bytes",
        "bound bytes", "save_compressed bytes",
    )
    for model, label, entry in _rows(results):
        base = entry["dense"]["sizes"]
        states = [("dense", base)] + [
            (f"pruned {run['target']}", run["sizes"])
            for run in entry["pruned"]
        ]
        for state, sizes in states:
            compressed = (
                _size(sizes["save_compressed"], base["keras_file"])
                if "save_compressed" in sizes else "n/a"
            )
            lines.append(
                f"| {model} | {label} | {state} "
                f"| {_size(sizes['keras_file'], base['keras_file'])} "
                f"| {_size(sizes['zipped'], base['zipped'])} "
                f"| {_size(sizes['bound'], base['bound'])} "
                f"| {compressed} |"
            )
    return "\n".join(lines)


def bound_check(results):
    """A sentence on whether our NumPy bound matches the library's."""
    differences = [
        sizes["bound"] - sizes["library_bound"]
        for _, _, entry in _rows(results)
        for sizes in [entry["dense"]["sizes"]]
        + [run["sizes"] for run in entry["pruned"]]
        if "library_bound" in sizes
    ]
    if not differences:
        return "No keras_sparsity run, so the bound was not cross-checked."
    worst = max(differences, key=abs)
    if worst == 0:
        return (
            f"The NumPy bound equals `keras_sparsity.compressed."
            f"information_bound_bytes` on all {len(differences)} "
            "keras_sparsity models."
        )
    return (
        "The NumPy bound differs from `keras_sparsity.compressed."
        f"information_bound_bytes` by up to {worst} bytes."
    )


def _versions(results):
    lines = []
    for result in results:
        versions = ", ".join(
            f"{name} {version}" for name, version in result["versions"].items()
        )
        lines.append(f"* {result['label']}: {versions}")
    return "\n".join(lines)


def markdown(results, args, seconds, loads):
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    plan = args.plan
    mode = "quick (smoke) run" if args.quick else "full run"
    recipe = (
        f"dense epochs: {plan['dense_epochs']}; pruning epochs: "
        f"{plan['recipe_epochs']}, with `PolynomialDecay(0.5 -> 0.8)` "
        f"ending at the last batch of epoch {plan['ramp_epochs']}"
    )
    kernels = "; ".join(f"{m}: {KERNELS[m]}" for m in args.models)
    header = (
        f"{when}, {mode}, commit {revision()}, {machine()}; 1-min load "
        f"average {loads[0]:.1f} before, {loads[1]:.1f} after; "
        f"{seconds / 60:.1f} min in all.\n\nMNIST t10k split, "
        f"{plan['num_train']:,} train / {plan['num_test']:,} test (seed "
        f"{args.seed}), batch 128, Adam; {recipe}.\n\n{_versions(results)}"
    )
    recipe_intro = (
        f"Kernels in order: {kernels}. Step times in ms over the full "
        "batches of the phase; step ratio = pruned median / dense median."
    )
    sections = [
        "# TFMOT's pruning recipe, keras_sparsity and TFMOT side by side",
        header,
        "## 1. The tutorial recipe (target 0.8)",
        recipe_intro,
        recipe_table(results),
    ]
    if not args.quick:
        sparsity_intro = (
            "Each target prunes a copy of the same dense weights for "
            f"{plan['fine_tune_epochs']} epochs (0.8: "
            f"{plan['recipe_epochs']}); the schedule ends after "
            f"{plan['ramp_epochs']} epochs in every case."
        )
        sections += [
            "## 2. Higher sparsity",
            sparsity_intro,
            sparsity_table(results),
        ]
    compression_intro = (
        "Each ratio in parentheses is the dense model's size in the same "
        "column over this one's; for `save_compressed` (keras_sparsity "
        "only) it is the dense `.keras` file over this file. "
        + bound_check(results)
    )
    sections += [
        "## 3. Compression of the stripped model",
        compression_intro,
        compression_table(results),
        "## Method",
        NOTES,
    ]
    return "\n\n".join(sections) + "\n"


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as directory:
        results = [run_worker(lib, args, directory) for lib in args.libraries]
    loads = (load_before, os.getloadavg()[0])
    text = markdown(results, args, time.perf_counter() - start, loads)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
