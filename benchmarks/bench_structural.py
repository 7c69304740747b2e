"""Structural pruning (issue #13): `prune_channels` -> `strip_pruning` ->
`shrink`, inference speed and accuracy, beside Torch-Pruning 1.6.1.

Speed (every backend, one process each): a ResNet-style CNN (input
32x32x3; stem conv 64, stages of 64/128/256 channels with two basic blocks
each, stride-2 projections; BatchNormalization everywhere; GAP; Dense 10)
and the MLP 1024-4096-4096-10, random weights, channels pruned once to
half of every prunable group (`ConstantSparsity(0.5)`, one optimizer step
with zero gradients), then stripped and shrunk. Inference time of the
shrunk model against the dense one, `predict_on_batch`, batch 1 and 32,
the two models interleaved (warm-up, then the median of `--repeats`
calls each). Targets at batch 32: >= 2.5x on JAX and TensorFlow, >= 1.3x
on PyTorch.

Accuracy (one backend, default jax): TFMOT's tutorial CNN (conv 12 ->
maxpool -> dense 10) and a small ResNet-style CNN (stem 16, two blocks at
16, one stride-2 block at 32, GAP, dense 10) on MNIST (8,000 train /
2,000 test, as `tfmot_recipe.py`), trained dense, then pruned with
`prune_channels` (L2 importance, uniform) to 2x fewer multiply-accumulates:
the sparsity is found by bisection on one-shot shrunk copies; the
schedule ramps to it over the first 60 % of the fine-tuning steps. Then
strip, shrink and evaluate. Target: within 1 point of dense.

Torch-Pruning 1.6.1 (PyTorch, L2 group importance, the same architectures
and recipe, its pruning ratio found the same way) runs in its own
virtualenv (`.venv-tp`, `make bench` builds it) through
`benchmarks/torch_pruning_worker.py`; its speed-up is measured on the same
machine in the same run.

Usage (from the repository root):

```
.venv/bin/python benchmarks/bench_structural.py \
    --out benchmarks/results/bench_structural.md
.venv/bin/python benchmarks/bench_structural.py --quick   # smoke, ~2 min
```
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from backend_runs import print_result
from backend_runs import run_child
from provenance import machine
from provenance import revision

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "examples"))
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"
TP_PYTHON = REPO_ROOT / ".venv-tp" / "bin" / "python"
TP_WORKER = REPO_ROOT / "benchmarks" / "torch_pruning_worker.py"
BACKENDS = ("jax", "tensorflow", "torch")
SPEED_MODELS = ("resnet_speed", "mlp")
ACCURACY_MODELS = ("tutorial_cnn", "resnet_mnist")
LABELS = {
    "resnet_speed": "ResNet-style CNN 32x32x3 (64/128/256)",
    "mlp": "MLP 1024-4096-4096-10",
    "tutorial_cnn": "TFMOT tutorial CNN",
    "resnet_mnist": "ResNet-style CNN (16/32)",
}
FULL = dict(num_train=8000, num_test=2000, dense_epochs=4, fine_tune_epochs=3,
            repeats=20)
QUICK = dict(num_train=1024, num_test=512, dense_epochs=1, fine_tune_epochs=1,
             repeats=3)
BATCH_SIZE = 128
MACS_RATIO = 2.0
# Keras' default 0.99 leaves the moving statistics near their start after
# a few hundred steps (the ResNets then score chance in inference mode);
# 0.9 is PyTorch's default, which the Torch-Pruning worker uses.
BN_MOMENTUM = 0.9


# --- models (Keras) ---------------------------------------------------------


def basic_block(L, x, width, stride):
    y = L.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
    y = L.BatchNormalization(momentum=BN_MOMENTUM)(y)
    y = L.ReLU()(y)
    y = L.Conv2D(width, 3, padding="same", use_bias=False)(y)
    y = L.BatchNormalization(momentum=BN_MOMENTUM)(y)
    if stride != 1 or x.shape[-1] != width:
        x = L.Conv2D(width, 1, strides=stride, use_bias=False)(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return L.ReLU()(L.Add()([x, y]))


def resnet(keras, input_shape, stem, stages):
    """`stages`: `(width, blocks, first stride)` each."""
    L = keras.layers
    inputs = keras.Input(input_shape)
    x = L.Conv2D(stem, 3, padding="same", use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization(momentum=BN_MOMENTUM)(x))
    for width, blocks, stride in stages:
        for i in range(blocks):
            x = basic_block(L, x, width, stride if i == 0 else 1)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(10)(x))


def build(keras, name):
    L = keras.layers
    if name == "resnet_speed":
        return resnet(
            keras, (32, 32, 3), 64, [(64, 2, 1), (128, 2, 2), (256, 2, 2)]
        )
    if name == "resnet_mnist":
        return resnet(keras, (28, 28, 1), 16, [(16, 2, 1), (32, 1, 2)])
    if name == "mlp":
        return keras.Sequential(
            [keras.Input((1024,)), L.Dense(4096, activation="relu"),
             L.Dense(4096, activation="relu"), L.Dense(10)]
        )
    return keras.Sequential(
        [keras.Input((28, 28, 1)), L.Conv2D(12, 3, activation="relu"),
         L.MaxPooling2D(2), L.Flatten(), L.Dense(10)]
    )


def model_macs(model):
    """Multiply-accumulates per example of a plain model's kernels."""
    from keras_sparsity import macs

    total = 0
    for layer in model.layers:
        for variable in layer.weights:
            found = macs.weight_uses(layer).get(id(variable))
            if found is not None:
                total += macs.multiply_accumulates(
                    found[2], int(np.prod(variable.shape))
                ) or 0
    return total


def one_shot(keras, sparsity, model, target):
    """`model` with `target` of each group's channels removed at
    once through the engine (one step, zero gradients), stripped, shrunk."""
    pruned = sparsity.prune_channels(
        model, sparsity.ConstantSparsity(target, begin_step=0)
    )
    pruned.compile(keras.optimizers.SGD(0.0), "mse")
    variables = pruned.trainable_variables
    pruned.optimizer.build(variables)
    pruned.optimizer.apply(
        [keras.ops.zeros(v.shape, v.dtype) for v in variables], variables
    )
    return sparsity.shrink(sparsity.strip_pruning(pruned))


def sparsity_for_macs(keras, sparsity, model, ratio, steps=8):
    """The smallest channel sparsity (to 1/2**steps) whose one-shot shrunk
    copy has `ratio` times fewer MACs than `model`."""
    dense = model_macs(model)
    low, high = 0.0, 0.95
    for _ in range(steps):
        middle = (low + high) / 2
        smaller = one_shot(keras, sparsity, model, middle)
        if dense / model_macs(smaller) >= ratio:
            high = middle
        else:
            low = middle
    return high


# --- children ---------------------------------------------------------------


def interleaved_times(models, x, repeats):
    """Median seconds per `predict_on_batch` of each model, alternating."""
    for model in models:
        for _ in range(3):
            model.predict_on_batch(x)
    times = [[] for _ in models]
    for _ in range(repeats):
        for found, model in zip(times, models):
            start = time.perf_counter()
            model.predict_on_batch(x)
            found.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def child_speed(args):
    import keras

    import keras_sparsity as sparsity

    keras.utils.set_random_seed(0)
    for name in SPEED_MODELS:
        model = build(keras, name)
        smaller = one_shot(keras, sparsity, model, 0.5)
        result = dict(
            task="speed", model=name, backend=keras.backend.backend(),
            params=model.count_params(), params_after=smaller.count_params(),
            macs=model_macs(model), macs_after=model_macs(smaller),
        )
        rng = np.random.default_rng(0)
        for batch in (1, 32):
            x = rng.random((batch,) + model.input_shape[1:], "float32")
            dense, shrunk = interleaved_times(
                [model, smaller], x, args.plan["repeats"]
            )
            result[f"dense_{batch}"] = dense
            result[f"shrunk_{batch}"] = shrunk
        print_result(result)


def child_accuracy(args):
    import keras
    from datasets import load_mnist

    import keras_sparsity as sparsity

    plan = args.plan
    (x, y), (x_test, y_test) = load_mnist(
        args.data_dir, plan["num_train"], plan["num_test"], seed=args.seed
    )
    x, x_test = x[..., None], x_test[..., None]
    for name in ACCURACY_MODELS:
        keras.utils.set_random_seed(args.seed)
        model = build(keras, name)
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH_SIZE, epochs=plan["dense_epochs"],
                  verbose=0)
        dense_seconds = time.perf_counter() - start
        dense_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
        target = sparsity_for_macs(keras, sparsity, model, MACS_RATIO)
        steps = plan["fine_tune_epochs"] * -(-len(x) // BATCH_SIZE)
        schedule = sparsity.PolynomialDecay(
            0.0, target, begin_step=0, end_step=max(1, int(0.6 * steps)),
            frequency=max(1, steps // 20),
        )
        pruned = sparsity.prune_channels(model, schedule)
        pruned.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        start = time.perf_counter()
        pruned.fit(x, y, batch_size=BATCH_SIZE,
                   epochs=plan["fine_tune_epochs"], verbose=0)
        fine_tune_seconds = time.perf_counter() - start
        smaller = sparsity.shrink(sparsity.strip_pruning(pruned))
        smaller.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        print_result(
            dict(
                task="accuracy", model=name, backend=keras.backend.backend(),
                sparsity=target, dense=dense_accuracy,
                pruned=smaller.evaluate(x_test, y_test, verbose=0)[1],
                macs=model_macs(model), macs_after=model_macs(smaller),
                params=model.count_params(),
                params_after=smaller.count_params(),
                dense_seconds=dense_seconds,
                fine_tune_seconds=fine_tune_seconds,
            )
        )


# --- the parent ---------------------------------------------------------------


def run_torch_pruning(args):
    if not args.torch_pruning:
        return []
    found = []
    commands = [
        ["--task", "speed", "--model", name, "--width", "0.5",
         "--repeats", str(args.plan["repeats"])]
        for name in SPEED_MODELS
    ] + [
        ["--task", "accuracy", "--model", name, "--data-dir",
         str(args.data_dir), "--dense-epochs", str(args.plan["dense_epochs"]),
         "--fine-tune-epochs", str(args.plan["fine_tune_epochs"]),
         "--num-train", str(args.plan["num_train"]),
         "--num-test", str(args.plan["num_test"]),
         "--macs-ratio", str(MACS_RATIO), "--seed", str(args.seed)]
        for name in ACCURACY_MODELS
    ]
    for command in commands:
        completed = subprocess.run(
            [str(args.tp_python), str(TP_WORKER), *command],
            stdout=subprocess.PIPE, text=True, check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"Torch-Pruning worker failed: {command}")
        found += [
            json.loads(line[len("RESULT "):])
            for line in completed.stdout.splitlines()
            if line.startswith("RESULT ")
        ]
    return found


def _ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"


def markdown(args, speed, accuracy, peer):
    lines = [
        "# Structural pruning: prune_channels -> shrink (issue #13)",
        "",
        f"Commit {revision()}, {machine()}, "
        f"{datetime.date.today().isoformat()}.",
        f"Plan: {json.dumps(args.plan)}.",
        "",
        "## Inference, half the channels of every prunable group",
        "",
        "Median seconds per `predict_on_batch` (Torch-Pruning: eager "
        "PyTorch under `no_grad`); speed-up = dense / shrunk.",
        "",
        "| model | runtime | params dense -> shrunk | batch 1 dense / shrunk "
        "| speed-up | batch 32 dense / shrunk | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(r, r["backend"]) for r in speed] + [
        (r, "Torch-Pruning") for r in peer if r.get("task") == "speed"
    ]
    for r, runtime in rows:
        lines.append(
            f"| {LABELS[r['model']]} | {runtime} | {r['params']:,} -> "
            f"{r['params_after']:,} | {r['dense_1'] * 1e3:.2f} / "
            f"{r['shrunk_1'] * 1e3:.2f} ms | "
            f"{_ratio(r['dense_1'], r['shrunk_1'])} | "
            f"{r['dense_32'] * 1e3:.1f} / {r['shrunk_32'] * 1e3:.1f} ms | "
            f"{_ratio(r['dense_32'], r['shrunk_32'])} |"
        )
    lines += [
        "",
        f"## Accuracy at {MACS_RATIO:g}x fewer MACs (MNIST, after "
        "fine-tuning)",
        "",
        "| model | library | channel sparsity | MACs dense -> pruned | "
        "dense acc | pruned acc | drop (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(r, f"keras-sparsity ({r['backend']})") for r in accuracy] + [
        (r, "Torch-Pruning") for r in peer if r.get("task") == "accuracy"
    ]
    for r, library in rows:
        ratio = r.get("sparsity", r.get("pruning_ratio"))
        lines.append(
            f"| {LABELS[r['model']]} | {library} | {ratio:.3f} | "
            f"{r['macs']:,} -> {r['macs_after']:,} "
            f"({_ratio(r['macs'], r['macs_after'])}) | "
            f"{r['dense']:.4f} | {r['pruned']:.4f} | "
            f"{100 * (r['dense'] - r['pruned']):+.2f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backends", nargs="+", choices=BACKENDS,
                        default=list(BACKENDS))
    parser.add_argument("--accuracy-backend", choices=BACKENDS, default="jax")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--tp-python", type=Path, default=TP_PYTHON)
    parser.add_argument("--no-torch-pruning", dest="torch_pruning",
                        action="store_false")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 repeats, 1,024 images, 1 epoch "
                        "each, no Torch-Pruning")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=("speed", "accuracy"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.plan = dict(QUICK if args.quick else FULL)
    if args.quick:
        args.torch_pruning = False
    if args.torch_pruning and not args.tp_python.exists():
        parser.error(
            f"--tp-python {args.tp_python} does not exist: build it with "
            "`make .venv-tp/.installed`, or pass --no-torch-pruning."
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child == "speed":
        return child_speed(args)
    if args.child == "accuracy":
        return child_accuracy(args)
    forwarded = [sys.executable, __file__, "--data-dir", str(args.data_dir),
                 "--seed", str(args.seed)] + (["--quick"] if args.quick else [])
    speed = []
    for backend in args.backends:
        speed += run_child(forwarded + ["--child", "speed"], backend)
    accuracy = run_child(
        forwarded + ["--child", "accuracy"], args.accuracy_backend
    )
    peer = run_torch_pruning(args)
    text = markdown(args, speed, accuracy, peer)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
