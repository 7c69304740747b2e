"""Data-parallel training of a pruned Keras model with `torch.distributed`.

Keras' `fit` has no data-parallel engine on PyTorch, so this is a custom
training loop: every process (rank) holds a whole copy of the pruned model,
computes gradients on its own slice of each global batch, averages them
with `all_reduce` and applies them through `SparsityOptimizer`. All ranks
then hold the same weights, so the optimizer computes the same masks on
every rank: there is nothing to synchronise but the gradients (and, once,
the initial weights). The result is the single-process run on the same
global batches, up to float rounding: the mean of per-slice mean gradients
is the gradient of the global batch mean when slices are equal in size.

Usage (from the repository root; 2 CPU processes, gloo):

    .venv/bin/torchrun --standalone --nproc_per_node 2 examples/torch_ddp.py
    .venv/bin/python examples/torch_ddp.py   # the same, one process

`--out FILE.npz` saves each rank's masks and weights (`FILE.rank<r>.npz`).
Set `KERAS_BACKEND=torch` or leave it unset; another backend is an error.
With GPUs, use the "nccl" backend, and move each rank's batches to its
device (`torch.cuda.set_device(local_rank)`).
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import keras_sparsity as sparsity  # noqa: E402

GLOBAL_BATCH = 16


def build_model():
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(5),
        ]
    )
    schedule = sparsity.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=8, frequency=2
    )
    return sparsity.prune_low_magnitude(model, schedule)


def broadcast_weights(model):
    """Every rank starts from rank 0's weights (masks included)."""
    with torch.no_grad():
        for variable in model.weights:
            dist.broadcast(variable.value.data, src=0)


def average_gradients(grads, world_size):
    """Sums each gradient over the ranks and divides by their number, in
    place. Masks get no gradient (None): nothing to reduce."""
    for grad in grads:
        if grad is not None:
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            grad.div_(world_size)


def train(num_samples=64, epochs=3, seed=0):
    """Trains on `num_samples` random samples in global batches of 16,
    each rank on its contiguous slice of each batch. Returns the model."""
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world_size = dist.get_world_size() if distributed else 1
    if GLOBAL_BATCH % world_size:
        raise ValueError(
            f"The global batch of {GLOBAL_BATCH} must split evenly over "
            f"the ranks. Received: world_size={world_size}"
        )
    keras.utils.set_random_seed(seed)
    rng = np.random.RandomState(seed)
    x = rng.rand(num_samples, 10).astype("float32")
    y = rng.randint(0, 5, num_samples)
    model = build_model()
    if distributed:
        broadcast_weights(model)
    optimizer = sparsity.SparsityOptimizer(keras.optimizers.Adam(0.01))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    local = GLOBAL_BATCH // world_size
    for _ in range(epochs):
        for start in range(0, num_samples, GLOBAL_BATCH):
            begin = start + rank * local
            x_local = torch.as_tensor(x[begin : begin + local])
            y_local = torch.as_tensor(y[begin : begin + local])
            loss = loss_fn(y_local, model(x_local, training=True))
            model.zero_grad()
            loss.backward()
            grads = [v.value.grad for v in variables]
            if distributed:
                average_gradients(grads, world_size)
            with torch.no_grad():
                optimizer.apply(grads, variables)
    return model


def masks_and_weights(model):
    """`{"mask<i>": ..., "kernel<i>": ...}` for every pruned kernel."""
    result = {}
    for index, wrapper in enumerate(sparsity.walk.pruning_wrappers(model)):
        result[f"mask{index}"] = keras.ops.convert_to_numpy(wrapper.masks[0])
        result[f"kernel{index}"] = keras.ops.convert_to_numpy(
            wrapper.pruned_weights[0]
        )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="save masks and weights per rank")
    args = parser.parse_args()
    if keras.backend.backend() != "torch":
        raise SystemExit(
            "torch_ddp.py runs on the PyTorch backend: set KERAS_BACKEND="
            f"torch. Received: KERAS_BACKEND={keras.backend.backend()}"
        )
    distributed = "WORLD_SIZE" in os.environ  # started by torchrun
    if distributed:
        dist.init_process_group("gloo")
    try:
        model = train()
        rank = dist.get_rank() if distributed else 0
        result = masks_and_weights(model)
        kept = sum(int(v.sum()) for k, v in result.items() if "mask" in k)
        total = sum(v.size for k, v in result.items() if "mask" in k)
        print(f"rank {rank}: {kept}/{total} weights kept")
        if args.out:
            stem = args.out.removesuffix(".npz")
            np.savez(f"{stem}.rank{rank}.npz", **result)
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
