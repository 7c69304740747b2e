"""Prunes a small MobileNet-style CNN on MNIST: unstructured 50 % and 2:4.

The form of TFMOT's pruning overview (non-sparse accuracy, unstructured
sparse accuracy at 50 %, structured 2:4 accuracy) on a depthwise-separable
CNN: a stride-2 stem convolution, then blocks of depthwise 3x3 and
pointwise 1x1 convolutions, each followed by BatchNorm and ReLU, global
average pooling and a Dense classifier. The dense model is trained first;
each pruned variant is a copy of it (`prune_low_magnitude` copies the
weights), fine-tuned with `PolynomialDecay(0 -> 0.5)` over the first half
of fine-tuning, stripped with `strip_pruning`, and evaluated. Batch 128,
Adam with learning rate 3e-3 in every phase.

The whole model is pruned, as a user would prune it. Under 2:4 the
stem convolution has a single input channel, so its groups hold one
weight and keep it (TFMOT's 2:4 guide leaves such a layer unstructured),
and a depthwise 3x3 kernel is grouped along its 3 columns, which keep 2:
the realised sparsity of the model is printed next to the target.

Usage (from the repository root):

    KERAS_BACKEND=jax .venv/bin/python examples/mobilenet_mnist.py
    KERAS_BACKEND=torch .venv/bin/python examples/mobilenet_mnist.py \
        --epochs 2 --fine-tune-epochs 1 --data-dir /path/to/mnist

`--data-dir` holds MNIST in IDX format (`t10k-*` and/or `train-*` files,
gzipped or not); by default `../shared/data/mnist`, whose 10,000 t10k
images are split 8,000 / 2,000 with a fixed seed.
"""

import argparse
import math
import os
import time

import keras
import numpy as np
from datasets import load_mnist

import keras_sparsity as sparsity

DEFAULT_DATA_DIR = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    os.pardir,
    os.pardir,
    "shared",
    "data",
    "mnist",
)
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
TARGET_SPARSITY = 0.5
M_BY_N = (2, 4)
PRUNING_FREQUENCY = 10
# Sparsity ramps up over this share of the fine-tuning steps.
RAMP_FRACTION = 0.5
# BatchNorm's moving statistics must settle within a few hundred steps.
BN_MOMENTUM = 0.9
# Variants of the overview table: name -> keyword arguments of
# `prune_low_magnitude` (None: the dense model itself).
VARIANTS = {
    "dense": None,
    "unstructured 50 %": {},
    "2:4": {"sparsity_m_by_n": M_BY_N},
}


def build_mobilenet(keras_module, stem_filters=16, block_filters=(32, 64, 64)):
    """A depthwise-separable CNN for 28x28 images, MobileNet style.

    Reshape -> Conv2D(stem_filters, 3, stride 2) -> BN -> ReLU (14x14),
    then per entry of `block_filters` a DepthwiseConv2D(3) -> BN -> ReLU
    -> Conv2D(filters, 1) -> BN -> ReLU block (the first depthwise has
    stride 2, so the blocks run at 7x7), then GlobalAveragePooling2D ->
    Dense(10) logits. Convolutions have no
    bias, as BatchNorm follows them; BatchNorm uses momentum 0.9 (not
    0.99) so that its moving statistics settle within the few hundred
    steps of these runs.

    Args:
        keras_module: The Keras module to build with (`keras`, or
            `tf_keras` for a TFMOT run).
        stem_filters: Int, filters of the stem convolution.
        block_filters: Sequence of ints, the pointwise filters per block.

    Example: `model = build_mobilenet(keras)`
    """
    layers = keras_module.layers
    inputs = keras_module.Input((28, 28), name="image")
    x = layers.Reshape((28, 28, 1), name="reshape")(inputs)
    x = layers.Conv2D(
        stem_filters, 3, strides=2, padding="same", use_bias=False, name="stem"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for index, filters in enumerate(block_filters, start=1):
        stride = 2 if index == 1 else 1
        x = layers.DepthwiseConv2D(
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            name=f"depthwise_{index}",
        )(x)
        x = layers.BatchNormalization(
            momentum=BN_MOMENTUM, name=f"depthwise_{index}_bn"
        )(x)
        x = layers.ReLU(name=f"depthwise_{index}_relu")(x)
        x = layers.Conv2D(
            filters, 1, use_bias=False, name=f"pointwise_{index}"
        )(x)
        x = layers.BatchNormalization(
            momentum=BN_MOMENTUM, name=f"pointwise_{index}_bn"
        )(x)
        x = layers.ReLU(name=f"pointwise_{index}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(10, name="logits")(x)
    return keras_module.Model(inputs, outputs, name="mobilenet_mnist")


def compile_classifier(model, learning_rate=LEARNING_RATE):
    """Adam and cross-entropy from logits, with an accuracy metric."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train(model, x, y, epochs, learning_rate=LEARNING_RATE):
    """Compiles `model` and fits it for `epochs` (batch 128)."""
    compile_classifier(model, learning_rate)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)


def accuracy(model, x, y):
    """Fraction of `x` classified as `y`."""
    logits = model.predict(x, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def pruning_schedule(num_steps, target=TARGET_SPARSITY):
    """`PolynomialDecay(0 -> target)` over the first half of `num_steps`.

    The schedule counts optimizer steps from 0; `end_step` lies inside the
    fine-tuning, so `target` is reached (masks are always updated at
    `end_step`) and the rest fine-tunes at it.
    """
    end_step = max(math.ceil(num_steps * RAMP_FRACTION) - 1, 0)
    return sparsity.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=target,
        begin_step=0,
        end_step=end_step,
        frequency=PRUNING_FREQUENCY,
    )


def prune_and_fine_tune(
    model,
    x,
    y,
    epochs,
    target=TARGET_SPARSITY,
    learning_rate=LEARNING_RATE,
    **kw,
):
    """Prunes a copy of `model` while fine-tuning; returns it stripped.

    Args:
        model: The trained dense `keras.Model`; it is not changed.
        x, y: Training data.
        epochs: Int >= 1, fine-tuning epochs.
        target: Float, the final sparsity.
        learning_rate: Float, Adam's learning rate.
        **kw: Passed to `prune_low_magnitude` (e.g. `sparsity_m_by_n`).

    Returns:
        The stripped model: plain Keras layers, exactly sparse kernels.
    """
    num_steps = epochs * math.ceil(len(x) / BATCH_SIZE)
    pruned = sparsity.prune_low_magnitude(
        model, pruning_schedule=pruning_schedule(num_steps, target), **kw
    )
    train(pruned, x, y, epochs, learning_rate)
    return sparsity.strip_pruning(pruned)


def kernels(model):
    """`(layer, value)` for each weight of rank >= 2: the pruned kernels.

    In these examples every weight of rank >= 2 is a kernel that
    `prune_low_magnitude` prunes; biases and BatchNorm weights are rank 1.
    """
    return [
        (layer, keras.ops.convert_to_numpy(weight))
        for layer in model.layers
        for weight in layer.weights
        if len(weight.shape) >= 2
    ]


def kernel_sparsity(model):
    """Fraction of zeros over all kernels of `model` (rank >= 2 weights)."""
    values = [value for _, value in kernels(model)]
    size = sum(value.size for value in values)
    nonzeros = sum(int(np.count_nonzero(value)) for value in values)
    return 1.0 - nonzeros / size


def group_axis(layer, kernel):
    """The axis along which `sparsity_m_by_n` groups `layer`'s kernel.

    The last input (reduction) axis: `in` of a Dense `(in, out)` or Conv
    `(..., in, out)` kernel; for a DepthwiseConv `(..., in, multiplier)`,
    whose reductions are the spatial axes, the last spatial axis.
    """
    if isinstance(
        layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
    ):
        return kernel.ndim - 3
    return kernel.ndim - 2


def m_by_n_groups(kernel, axis, m_by_n=M_BY_N):
    """Counts `(groups, conforming groups)` of `kernel` for an m:n pattern.

    Groups are `n` consecutive weights along `axis`, the last one possibly
    shorter; a group conforms when at most `n - m` of its weights are
    non-zero (so a last group of `r <= n - m` weights always does, as
    TFMOT's checker and `sparsity_m_by_n` treat it).
    """
    num_zeros, group_size = m_by_n
    moved = np.moveaxis(kernel, axis, -1)
    length = moved.shape[-1]
    padded_length = -(-length // group_size) * group_size
    padding = [(0, 0)] * (moved.ndim - 1) + [(0, padded_length - length)]
    groups = np.pad(moved, padding).reshape(-1, group_size)
    nonzeros = np.count_nonzero(groups, axis=-1)
    return len(groups), int(np.sum(nonzeros <= group_size - num_zeros))


def m_by_n_conformance(model, m_by_n=M_BY_N):
    """`(groups, conforming groups)` summed over all kernels of `model`."""
    total, conforming = 0, 0
    for layer, value in kernels(model):
        groups, good = m_by_n_groups(value, group_axis(layer, value), m_by_n)
        total += groups
        conforming += good
    return total, conforming


def run_variants(
    build, data, epochs, fine_tune_epochs, learning_rate=LEARNING_RATE
):
    """Trains `build()` dense, then each pruned variant from its weights.

    Args:
        build: Callable returning a fresh, untrained `keras.Model`.
        data: `((x_train, y_train), (x_test, y_test))`.
        epochs: Int >= 1, dense training epochs.
        fine_tune_epochs: Int >= 1, fine-tuning epochs per pruned variant.
        learning_rate: Float, Adam's learning rate in every phase.

    Returns:
        A dict per entry of `VARIANTS`: `accuracy`, `sparsity` (realised,
        over all kernels), `seconds` (training wall time), `model` (the
        dense model or the stripped one) and, for 2:4, `groups` and
        `conforming`.
    """
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(0)
    dense = build()
    results = {}
    for name, prune_kwargs in VARIANTS.items():
        start = time.perf_counter()
        if prune_kwargs is None:
            train(dense, x_train, y_train, epochs, learning_rate)
            model = dense
        else:
            keras.utils.set_random_seed(1)
            model = prune_and_fine_tune(
                dense,
                x_train,
                y_train,
                fine_tune_epochs,
                learning_rate=learning_rate,
                **prune_kwargs,
            )
        result = {
            "seconds": time.perf_counter() - start,
            "accuracy": accuracy(model, x_test, y_test),
            "sparsity": kernel_sparsity(model),
            "model": model,
        }
        if prune_kwargs and "sparsity_m_by_n" in prune_kwargs:
            result["groups"], result["conforming"] = m_by_n_conformance(model)
        results[name] = result
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--epochs", type=int, default=4, help="dense training epochs"
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=2,
        help="fine-tuning epochs of each pruned variant",
    )
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-test", type=int, default=2000)
    args = parser.parse_args(argv)
    for name in ("epochs", "fine_tune_epochs", "num_train", "num_test"):
        value = getattr(args, name)
        if value < 1:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} must be >= 1. Received: {flag}={value}")
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f"Keras backend: {keras.backend.backend()}")
    data = load_mnist(args.data_dir, args.num_train, args.num_test)
    results = run_variants(
        lambda: build_mobilenet(keras),
        data,
        args.epochs,
        args.fine_tune_epochs,
    )
    print("| variant | test accuracy | kernel sparsity | 2:4 groups | time |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        groups = "-"
        if "groups" in result:
            groups = f"{result['conforming']:,} of {result['groups']:,} conform"
        print(
            f"| {name} | {result['accuracy']:.4f} | {result['sparsity']:.4f} "
            f"| {groups} | {result['seconds']:.1f} s |"
        )


if __name__ == "__main__":
    main()
