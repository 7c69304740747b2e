"""Channel pruning with Torch-Pruning 1.6.1 in PyTorch: the peer of our own.

The PyTorch side of the structural-pruning benchmark: the same
architectures as the Keras ones, pruned by Torch-Pruning (DepGraph) with
group L2 magnitude importance, local (per-group) ratios, the final Linear's
outputs kept. Runs in a virtualenv of its own (`.venv-tp`: `torch==2.13.0`
CPU, `torch-pruning==1.6.1`, `numpy==2.4.6`; no Keras), one task per
process, and prints its result as one line `RESULT {json}` on stdout
(progress goes to stderr).

```
.venv-tp/bin/python benchmarks/torch_pruning_worker.py --task accuracy \
    --model tutorial_cnn --data-dir ../shared/data --dense-epochs 4 \
    --fine-tune-epochs 2 --num-train 8000 --num-test 2000 --macs-ratio 2.0
.venv-tp/bin/python benchmarks/torch_pruning_worker.py --task speed \
    --model resnet_speed --width 0.5 --repeats 20
```

Tasks:

* `accuracy` (`tutorial_cnn`, `resnet_mnist`; MNIST 1x28x28): train the
  dense model (Adam 1e-3, batch 128, cross-entropy, E epochs), count MACs
  on one sample, search the pruning ratio by bisection over [0, 0.9]
  (`--search-iterations`, each trial prunes a deep copy) for the smallest
  ratio whose MACs fall by `--macs-ratio`, prune the model once at that
  ratio, report the accuracy before fine-tuning, fine-tune F epochs with
  the same optimizer settings (a fresh Adam), report the accuracy after,
  and time inference dense vs pruned at batch 1 and 32 (test images).
  The MACs the search counts (`--macs-counter`): `layers` (default), the
  Conv2d and Linear weight products, as keras_sparsity counts them; or
  `tp`, `tp.utils.count_ops_and_params` (biases, BatchNorm, pooling and
  `nn.ReLU` modules too). Both are reported.
* `speed` (`resnet_speed` 3x32x32, `mlp` 1024-4096-4096-10): random
  (seeded) weights, prune at `pruning_ratio = 1 - width`, time inference.

Pruning: `tp.pruner.BasePruner` (`MetaPruner` and `MagnitudePruner` are
aliases of it in 1.6.1) with `GroupMagnitudeImportance(p=2)`,
`global_pruning=False`, `ignored_layers=[model.fc]`, `round_to` from
`--round-to`. Locally, each group keeps `floor(channels * (1 - ratio))`.

The RESULT keys (flat ones as `bench_structural.py` reads them): `task`,
`model`, `library`, `versions`, `threads`, `config`, `method`,
`pruning_ratio`, `macs`/`macs_after` (kernel MACs), `tp_macs`/
`tp_macs_after`, `params`/`params_after`, `macs_reduction`,
`tp_macs_reduction`, `params_reduction`, `dense_1`/`shrunk_1`/`dense_32`/
`shrunk_32` (median seconds per call), `speedup_1`/`speedup_32`,
`prune_seconds`, `details` (channels before/after, Torch-Pruning's groups
and channels removed, the bisection trials, timings in ms with minima),
`wall_s`; for `accuracy` also `data_dir`, `dense`, `pruned_before_fine_tune`,
`pruned` (test accuracies), `dense_seconds`, `search_seconds`,
`fine_tune_seconds`; for `speed` also `width`.

Matching the Keras side (`benchmarks/tfmot_recipe.py`, `examples/datasets.py`
and `benchmarks/tfmot_worker.py`):

* Data: all MNIST IDX pairs in `--data-dir` (`train-*`, then `t10k-*`; here
  only t10k) pooled, scaled by 1/255, permuted with
  `np.random.default_rng(seed)`; the first N of the permutation train, the
  next M test (also accepts the directory above `mnist/`).
* Batches: dense epochs run over `np.random.default_rng(seed + 1)`
  permutations, fine-tuning epochs over `default_rng(seed + 2)`, the
  partial last batch included (as Keras `fit` does).
* Initial weights: Glorot-uniform kernels drawn with NumPy from the seed in
  Keras's layout (`(kh, kw, in, out)` for convolutions, `(in, out)` for
  dense, a Dense after Flatten with its rows in NHWC order) and transposed
  to PyTorch's, biases zero, BatchNorm at gamma 1, beta 0, mean 0, var 1.
  Kernels are drawn in the order listed by `model.init_order`.
* Keras defaults where PyTorch's differ: BatchNorm `eps=1e-3`, Adam
  `eps=1e-7`. Not BatchNorm's momentum: Keras's 0.99 (0.01 in PyTorch's
  convention) leaves the moving variance near its initial 1 after the
  ~250 steps of 4 epochs on 8,000 images, where the batches' is ~0.006 in
  the stem, so the dense ResNet scores chance in eval mode. Default 0.1
  (PyTorch's; Keras momentum 0.9), `--bn-momentum` to change.

Timing: `torch.no_grad()`, eval mode, `torch.set_num_threads(--threads)`
(default `os.cpu_count()`); 3 warm-up calls per model, then `--repeats`
rounds, each timing the dense model once and the pruned model once (so load
drift hits both alike); median (and min) in ms.
"""

import argparse
import copy
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BATCH_SIZE = 128
LEARNING_RATE = 1e-3
ADAM_EPSILON = 1e-7  # Keras's default (PyTorch's is 1e-8)
BN_EPSILON = 1e-3  # Keras's default (PyTorch's is 1e-5)
# PyTorch's convention (Keras's momentum is 1 minus it); --bn-momentum.
BN_MOMENTUM = 0.1
WARMUP = 3
ACCURACY_MODELS = ("tutorial_cnn", "resnet_mnist")
SPEED_MODELS = ("resnet_speed", "mlp")
MACS_COUNTERS = {"tp": "macs", "layers": "layer_macs"}


def log(message):
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Data


def load_mnist(data_dir, num_train, num_test, seed):
    """MNIST split as `examples/datasets.load_mnist` splits it (the same
    reader: it needs only NumPy), in NCHW.

    Returns `(x_train, y_train), (x_test, y_test), directory` with images
    float32 `(n, 1, 28, 28)` in [0, 1] and int64 labels.
    """
    sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))
    import datasets

    for directory in (data_dir, os.path.join(data_dir, "mnist")):
        try:
            (x, y), (x_test, y_test) = datasets.load_mnist(
                directory, num_train, num_test, seed
            )
        except ValueError:
            continue
        return (
            (x[:, None], y.astype("int64")),
            (x_test[:, None], y_test.astype("int64")),
            directory,
        )
    raise SystemExit(f"No MNIST IDX files in {data_dir} or its mnist/.")


# --------------------------------------------------------------------------
# Models


def batch_norm(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


class TutorialCNN(nn.Module):
    """TFMOT's tutorial CNN: Conv2d(1, 12, 3) ReLU, MaxPool 2, Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 12, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(12 * 13 * 13, 10)
        # Keras's Flatten is NHWC: the Dense kernel's rows are (h, w, c).
        self.init_order = [("conv", None), ("fc", (12, 13, 13))]

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, + identity or 1x1 projection, ReLU."""

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, channels, 3, stride=stride, padding=1, bias=False
        )
        self.bn1 = batch_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = batch_norm(channels)
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                batch_norm(channels),
            )
        else:
            self.shortcut = None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """Stem conv3x3-BN-ReLU, stages of basic blocks, GAP, Linear."""

    def __init__(self, in_channels, stem, stages, num_classes=10):
        super().__init__()
        self.stem_conv = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.stem_bn = batch_norm(stem)
        blocks, channels = [], stem
        self.init_order = [("stem_conv", None)]
        for stage, (width, count) in enumerate(stages):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                name = f"blocks.{len(blocks)}"
                blocks.append(BasicBlock(channels, width, stride))
                self.init_order += [
                    (f"{name}.conv1", None), (f"{name}.conv2", None)
                ]
                if blocks[-1].shortcut is not None:
                    self.init_order.append((f"{name}.shortcut.0", None))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)
        self.init_order.append(("fc", None))

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        x = self.blocks(x)
        x = torch.mean(x, dim=(2, 3))
        return self.fc(x)


class MLP(nn.Module):
    """Linear 1024-4096 ReLU, 4096-4096 ReLU, 4096-10."""

    def __init__(self, sizes=(1024, 4096, 4096, 10)):
        super().__init__()
        self.fc1 = nn.Linear(sizes[0], sizes[1])
        self.fc2 = nn.Linear(sizes[1], sizes[2])
        self.fc = nn.Linear(sizes[2], sizes[3])
        self.init_order = [("fc1", None), ("fc2", None), ("fc", None)]

    def forward(self, x):
        return self.fc(F.relu(self.fc2(F.relu(self.fc1(x)))))


def build(name, bn_momentum=BN_MOMENTUM):
    """Returns `(model, input_shape)` for one sample (no batch axis)."""
    model, input_shape = _build(name)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = bn_momentum
    return model, input_shape


def _build(name):
    if name == "tutorial_cnn":
        return TutorialCNN(), (1, 28, 28)
    if name == "resnet_mnist":
        return ResNet(1, 16, [(16, 2), (32, 1)]), (1, 28, 28)
    if name == "resnet_speed":
        return ResNet(3, 64, [(64, 2), (128, 2), (256, 2)]), (3, 32, 32)
    if name == "mlp":
        return MLP(), (1024,)
    raise ValueError(name)


@torch.no_grad()
def initialize(model, seed):
    """Glorot-uniform kernels drawn in Keras's layout, biases zero."""
    rng = np.random.default_rng(seed)
    modules = dict(model.named_modules())
    for name, flatten_chw in model.init_order:
        layer = modules[name]
        weight = layer.weight
        if isinstance(layer, nn.Conv2d):
            out_ch, in_ch, kh, kw = weight.shape
            keras_shape = (kh, kw, in_ch, out_ch)
            fan_in, fan_out = kh * kw * in_ch, kh * kw * out_ch
        else:
            out_f, in_f = weight.shape
            keras_shape = (in_f, out_f)
            fan_in, fan_out = in_f, out_f
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, keras_shape).astype("float32")
        if isinstance(layer, nn.Conv2d):
            value = kernel.transpose(3, 2, 0, 1)
        elif flatten_chw is not None:
            c, h, w = flatten_chw
            value = (
                kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1)
                .reshape(-1, c * h * w)
            )
        else:
            value = kernel.T
        weight.copy_(torch.from_numpy(np.ascontiguousarray(value)))
        if layer.bias is not None:
            layer.bias.zero_()


# --------------------------------------------------------------------------
# Measures


def layer_macs(model, input_shape):
    """Multiply-accumulates of the Conv2d and Linear layers for one sample.

    Only weight products (no bias, BatchNorm, activation or pooling), unlike
    `tp.utils.count_ops_and_params`, which counts all of those too.
    """
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = kh * kw * module.in_channels // module.groups
            total += per_output * output.numel()
        else:
            total += module.in_features * output.numel()

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros((1,) + tuple(input_shape)))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return int(total)


def measure(model, input_shape):
    macs, params = tp.utils.count_ops_and_params(
        model, torch.zeros((1,) + tuple(input_shape))
    )
    return {
        "macs": int(macs),
        "params": int(params),
        "layer_macs": layer_macs(model, input_shape),
    }


def channels(model):
    """Output channels/features of each Conv2d and Linear, by name."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            out[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            out[name] = module.out_features
    return out


def time_inference(dense, pruned, inputs, repeats):
    """Median/min ms per call, dense and pruned timed in alternation."""
    dense.eval()
    pruned.eval()
    times = {"dense": [], "pruned": []}
    with torch.no_grad():
        for model in (dense, pruned):
            for _ in range(WARMUP):
                model(inputs)
        for _ in range(repeats):
            for key, model in (("dense", dense), ("pruned", pruned)):
                start = time.perf_counter()
                model(inputs)
                times[key].append(1000.0 * (time.perf_counter() - start))
    result = {}
    for key, values in times.items():
        result[f"{key}_ms"] = statistics.median(values)
        result[f"{key}_min_ms"] = min(values)
    result["speedup"] = result["dense_ms"] / result["pruned_ms"]
    return result


def inference(dense, pruned, sample_batch, repeats):
    """Timings at batch 1 and 32; `sample_batch(n)` gives the inputs."""
    result = {"repeats": repeats, "warmup": WARMUP}
    for batch in (1, 32):
        result[f"batch{batch}"] = time_inference(
            dense, pruned, sample_batch(batch), repeats
        )
    b1, b32 = result["batch1"], result["batch32"]
    log(
        f"inference dense/pruned: batch 1 {b1['dense_ms']:.3f}/"
        f"{b1['pruned_ms']:.3f} ms ({b1['speedup']:.2f}x), batch 32 "
        f"{b32['dense_ms']:.3f}/{b32['pruned_ms']:.3f} ms "
        f"({b32['speedup']:.2f}x)"
    )
    return result


# --------------------------------------------------------------------------
# Pruning


def make_pruner(model, input_shape, ratio, round_to):
    """Torch-Pruning's pruner (`MetaPruner` is an alias of `BasePruner`)."""
    return tp.pruner.BasePruner(
        model,
        torch.zeros((1,) + tuple(input_shape)),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=False,
        pruning_ratio=ratio,
        ignored_layers=[model.fc],
        round_to=round_to,
    )


def prune(model, input_shape, ratio, round_to):
    """Prunes `model` in place at `ratio`; returns the group summaries."""
    model.eval()  # tracing runs a forward pass; keep BN statistics intact
    pruner = make_pruner(model, input_shape, ratio, round_to)
    groups = []
    for group in pruner.step(interactive=True):
        members = sorted(
            {
                pruner.DG._module2name.get(dep.target.module, "?")
                for dep, _ in group
                if isinstance(dep.target.module, (nn.Conv2d, nn.Linear))
                and pruner.DG.is_out_channel_pruning_fn(dep.handler)
            }
        )
        groups.append({"out_members": members, "removed": len(group[0][1])})
        group.prune()
    return groups


def search_ratio(
    model, input_shape, macs_ratio, iterations, tolerance, round_to, counter
):
    """Smallest pruning ratio whose MACs fall by `macs_ratio` (bisection).

    MACs as `counter` says: `"macs"` (`tp.utils.count_ops_and_params`) or
    `"layer_macs"` (Conv2d and Linear products only). Each trial prunes a
    deep copy. Channel counts are integers, so MACs are
    a step function of the ratio; a trial counts as reaching the target
    when `dense / pruned >= macs_ratio * (1 - tolerance)`.
    """
    dense_macs = measure(model, input_shape)[counter]
    target = macs_ratio * (1.0 - tolerance)
    trials = []

    def achieved(ratio):
        trial = copy.deepcopy(model)
        prune(trial, input_shape, ratio, round_to)
        macs = measure(trial, input_shape)[counter]
        trials.append(
            {"ratio": ratio, "macs": macs, "reduction": dense_macs / macs}
        )
        return dense_macs / macs

    # A group keeps floor(channels * (1 - ratio)); when that is 0,
    # Torch-Pruning silently leaves the group whole (MACs go back up), so
    # the search stays at or below 0.9 (groups here have >= 12 channels).
    low, high = 0.0, 0.9
    if achieved(high) < target:
        raise SystemExit(
            f"--macs-ratio {macs_ratio} is out of reach: pruning ratio "
            f"{high} gives {trials[-1]['reduction']:.2f}x."
        )
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if achieved(middle) >= target:
            high = middle
        else:
            low = middle
    return high, trials


# --------------------------------------------------------------------------
# Training


def train(model, x, y, orders):
    """One pass per order with a fresh Adam; returns wall seconds."""
    optimizer = torch.optim.Adam(
        model.parameters(), lr=LEARNING_RATE, eps=ADAM_EPSILON
    )
    model.train()
    start = time.perf_counter()
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
    for epoch, order in enumerate(orders):
        order = torch.from_numpy(order)
        losses = []
        for begin in range(0, len(order), BATCH_SIZE):
            index = order[begin: begin + BATCH_SIZE]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_all[index]), y_all[index])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        log(f"  epoch {epoch + 1}/{len(orders)}: loss {np.mean(losses):.4f}")
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    correct = 0
    for begin in range(0, len(x), 1000):
        logits = model(torch.from_numpy(x[begin: begin + 1000]))
        found = logits.argmax(1).numpy()
        correct += int((found == y[begin: begin + 1000]).sum())
    return correct / len(x)


def epoch_orders(count, epochs, seed):
    rng = np.random.default_rng(seed)
    return [rng.permutation(count) for _ in range(epochs)]


# --------------------------------------------------------------------------
# Tasks


def flat_measures(dense, pruned):
    """The keys `bench_structural.py` reads, plus Torch-Pruning's counts.

    `macs` are kernel multiply-accumulates (Conv2d and Linear products,
    as keras_sparsity counts them); `tp_macs` are
    `tp.utils.count_ops_and_params`'s (biases, BatchNorm and pooling too).
    """
    return {
        "macs": dense["layer_macs"],
        "macs_after": pruned["layer_macs"],
        "tp_macs": dense["macs"],
        "tp_macs_after": pruned["macs"],
        "params": dense["params"],
        "params_after": pruned["params"],
        "macs_reduction": dense["layer_macs"] / pruned["layer_macs"],
        "tp_macs_reduction": dense["macs"] / pruned["macs"],
        "params_reduction": dense["params"] / pruned["params"],
    }


def flat_times(timings):
    """Median seconds per call, as `bench_structural.py` reads them."""
    out = {}
    for batch in (1, 32):
        found = timings[f"batch{batch}"]
        out[f"dense_{batch}"] = found["dense_ms"] / 1000.0
        out[f"shrunk_{batch}"] = found["pruned_ms"] / 1000.0
        out[f"speedup_{batch}"] = found["speedup"]
    return out


def run_accuracy(args):
    (x_train, y_train), (x_test, y_test), data_dir = load_mnist(
        args.data_dir, args.num_train, args.num_test, args.seed
    )
    model, input_shape = build(args.model, args.bn_momentum)
    initialize(model, args.seed)

    log(f"{args.model}: dense training, {args.dense_epochs} epochs")
    dense_seconds = train(
        model, x_train, y_train,
        epoch_orders(len(x_train), args.dense_epochs, args.seed + 1),
    )
    dense = measure(model, input_shape)
    dense_accuracy = accuracy(model, x_test, y_test)
    dense_channels = channels(model)

    log(f"{args.model}: searching the ratio for {args.macs_ratio}x MACs")
    start = time.perf_counter()
    ratio, trials = search_ratio(
        model, input_shape, args.macs_ratio, args.search_iterations,
        args.macs_tolerance, args.round_to, MACS_COUNTERS[args.macs_counter],
    )
    search_seconds = time.perf_counter() - start
    dense_model = copy.deepcopy(model)
    start = time.perf_counter()
    groups = prune(model, input_shape, ratio, args.round_to)
    prune_seconds = time.perf_counter() - start
    pruned = measure(model, input_shape)
    accuracy_before = accuracy(model, x_test, y_test)
    log(
        f"{args.model}: ratio {ratio:.4f}, fine-tuning "
        f"{args.fine_tune_epochs} epochs"
    )
    fine_tune_seconds = train(
        model, x_train, y_train,
        epoch_orders(len(x_train), args.fine_tune_epochs, args.seed + 2),
    )
    pruned_accuracy = accuracy(model, x_test, y_test)
    log(
        f"{args.model}: accuracy dense {dense_accuracy:.4f}, pruned "
        f"{accuracy_before:.4f} before / {pruned_accuracy:.4f} after "
        f"fine-tuning"
    )

    def sample_batch(n):
        return torch.from_numpy(np.ascontiguousarray(x_test[:n]))

    timings = inference(dense_model, model, sample_batch, args.repeats)
    return dict(
        data_dir=os.path.abspath(data_dir),
        pruning_ratio=ratio,
        dense=dense_accuracy,
        pruned_before_fine_tune=accuracy_before,
        pruned=pruned_accuracy,
        **flat_measures(dense, pruned),
        dense_seconds=dense_seconds,
        search_seconds=search_seconds,
        prune_seconds=prune_seconds,
        fine_tune_seconds=fine_tune_seconds,
        **flat_times(timings),
        details={
            "macs_counter": args.macs_counter,
            "channels": dense_channels,
            "channels_after": channels(model),
            "groups": groups,
            "trials": trials,
            "inference": timings,
        },
    )


def run_speed(args):
    if not 0.0 < args.width <= 1.0:
        raise SystemExit(f"--width must be in (0, 1]. Received: {args.width}")
    model, input_shape = build(args.model, args.bn_momentum)
    initialize(model, args.seed)
    model.eval()
    dense_model = copy.deepcopy(model)
    dense = measure(model, input_shape)
    ratio = 1.0 - args.width
    start = time.perf_counter()
    groups = prune(model, input_shape, ratio, args.round_to)
    prune_seconds = time.perf_counter() - start
    pruned = measure(model, input_shape)
    rng = np.random.default_rng(args.seed + 3)

    def sample_batch(n):
        values = rng.standard_normal((n,) + input_shape).astype("float32")
        return torch.from_numpy(values)

    timings = inference(dense_model, model, sample_batch, args.repeats)
    return dict(
        width=args.width,
        pruning_ratio=ratio,
        **flat_measures(dense, pruned),
        prune_seconds=prune_seconds,
        **flat_times(timings),
        details={
            "channels": channels(dense_model),
            "channels_after": channels(model),
            "groups": groups,
            "inference": timings,
        },
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=("accuracy", "speed"), required=True)
    parser.add_argument(
        "--model", choices=ACCURACY_MODELS + SPEED_MODELS, required=True
    )
    parser.add_argument(
        "--data-dir", default=os.path.join(
            os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__)))), "shared", "data"),
        help="MNIST IDX files here or in its mnist/ (default ../shared/data)",
    )
    parser.add_argument("--dense-epochs", type=int, default=4)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--macs-ratio", type=float, default=2.0)
    parser.add_argument(
        "--macs-tolerance", type=float, default=0.0,
        help="relative slack on --macs-ratio (channel counts are integers; "
        "with --macs-counter tp, 0.01 lets 6 of 12 channels count as 2x)",
    )
    parser.add_argument(
        "--macs-counter", choices=sorted(MACS_COUNTERS), default="layers",
        help="what --macs-ratio counts: Conv2d/Linear products (layers, as "
        "keras_sparsity counts MACs) or tp.utils.count_ops_and_params (tp: "
        "also biases, BatchNorm, pooling)",
    )
    parser.add_argument("--search-iterations", type=int, default=10)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument(
        "--round-to", type=int, default=None,
        help="Torch-Pruning's round_to (kept channels a multiple of it)",
    )
    parser.add_argument(
        "--bn-momentum", type=float, default=BN_MOMENTUM,
        help="BatchNorm momentum in PyTorch's convention (default 0.1, "
        "Keras momentum 0.9; Keras's default 0.99 is 0.01 here, too slow "
        "for the ~250 training steps: the moving variance stays ~10x too "
        "large and resnet_mnist's eval accuracy is chance)",
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    models = ACCURACY_MODELS if args.task == "accuracy" else SPEED_MODELS
    if args.model not in models:
        parser.error(f"--task {args.task} takes --model {' or '.join(models)}")
    for name in ("dense_epochs", "num_train", "num_test", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.fine_tune_epochs < 0:
        parser.error("--fine-tune-epochs must be >= 0")
    if args.macs_ratio <= 1.0:
        parser.error("--macs-ratio must be > 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    if args.task == "accuracy":
        body = run_accuracy(args)
    else:
        body = run_speed(args)
    result = {
        "task": args.task,
        "model": args.model,
        "library": "torch-pruning",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_pruning": importlib.metadata.version("torch-pruning"),
            "numpy": np.__version__,
        },
        "threads": torch.get_num_threads(),
        "config": {
            key: value for key, value in vars(args).items()
            if key not in ("task", "model")
        },
        "method": {
            "pruner": "tp.pruner.BasePruner (MetaPruner is an alias)",
            "importance": "GroupMagnitudeImportance(p=2)",
            "global_pruning": False,
            "ignored_layers": ["fc"],
            "round_to": args.round_to,
            "batch_size": BATCH_SIZE,
            "optimizer": f"Adam(lr={LEARNING_RATE}, eps={ADAM_EPSILON})",
            "batch_norm": f"eps={BN_EPSILON}, momentum={args.bn_momentum} "
            f"(PyTorch's convention; Keras momentum {1 - args.bn_momentum:g})",
        },
    }
    result.update(body)
    result["wall_s"] = time.perf_counter() - start
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
