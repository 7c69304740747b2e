"""Trains one pruned model on one device and sharded over two, saves both.

Run as a script by `test_distribution.py` (JAX only; device setup must
precede the framework's import): `python model_parallel_fit.py OUT.npz`.
Kernels are sharded along their output axis over two virtual CPU devices
with `keras.distribution.ModelParallel`; the pruning is global (one
ranking over every kernel) with the saliency criterion, so the ranking
and the criterion's state both see sharded tensors.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sparsity as sparsity  # noqa: E402


def train(sharded):
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    x = rng.rand(64, 10).astype("float32")
    y = rng.randint(0, 4, 64)
    if sharded:
        devices = keras.distribution.list_devices("cpu")
        assert len(devices) == 2, devices
        mesh = keras.distribution.DeviceMesh(
            (1, 2), ("batch", "model"), devices
        )
        layout_map = keras.distribution.LayoutMap(mesh)
        layout_map[".*dense.*kernel.*"] = (None, "model")
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(
                layout_map=layout_map, batch_dim_name="batch"
            )
        )
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(4),
        ]
    )
    pruned = sparsity.prune_low_magnitude(
        model,
        sparsity.PolynomialDecay(0.3, 0.8, 0, 6, frequency=2),
        allocation="global",
        criterion="saliency",
    )
    pruned.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pruned.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    found = {}
    for index, wrapper in enumerate(sparsity.walk.pruning_wrappers(pruned)):
        kernel, mask = wrapper.pruned_weights[0], wrapper.masks[0]
        found[f"mask{index}"] = keras.ops.convert_to_numpy(mask)
        found[f"weight{index}"] = keras.ops.convert_to_numpy(kernel)
        found[f"shards{index}"] = np.array(
            len({str(s.index) for s in kernel.value.addressable_shards})
        )
    keras.distribution.set_distribution(None)
    return found


if __name__ == "__main__":
    single = train(sharded=False)
    double = train(sharded=True)
    np.savez(
        sys.argv[1],
        **{f"single/{k}": v for k, v in single.items()},
        **{f"double/{k}": v for k, v in double.items()},
    )
