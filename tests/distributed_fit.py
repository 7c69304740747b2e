"""Trains one pruned model on one device and on two, prints both masks.

Run as a script by `test_distribution.py` (device setup must precede the
framework's import): `python distributed_fit.py OUT.npz`. Uses two virtual
CPU devices: XLA's host device count on JAX, two logical CPUs and a
MirroredStrategy on TensorFlow.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sparsity as sparsity  # noqa: E402

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )


def train(distributed):
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    x = rng.rand(64, 10).astype("float32")
    y = rng.randint(0, 5, 64)

    def build():
        model = keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(5),
            ]
        )
        schedule = sparsity.PolynomialDecay(0.3, 0.8, 0, 6, frequency=2)
        pruned = sparsity.prune_low_magnitude(model, schedule)
        pruned.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return pruned

    strategy = None
    if not distributed:
        model = build()
    elif BACKEND == "jax":
        devices = keras.distribution.list_devices("cpu")
        assert len(devices) == 2, devices
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices)
        )
        model = build()
    else:
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = build()
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    masks = {}
    wrappers = sparsity.walk.pruning_wrappers(model)
    for index, wrapper in enumerate(wrappers):
        weight, mask = wrapper.pruned_weights[0], wrapper.masks[0]
        masks[f"mask{index}"] = keras.ops.convert_to_numpy(mask)
        masks[f"weight{index}"] = keras.ops.convert_to_numpy(weight)
        if distributed:
            copies = replica_values(mask, strategy)
            assert len(copies) == 2, len(copies)
            masks[f"replicas_agree{index}"] = np.array(
                all(np.array_equal(copies[0], c) for c in copies)
            )
    if BACKEND == "jax":
        keras.distribution.set_distribution(None)
    return masks


def replica_values(variable, strategy):
    """The variable's value as held by each device or replica."""
    if BACKEND == "jax":
        return [
            np.asarray(shard.data)
            for shard in variable.value.addressable_shards
        ]
    return [
        v.numpy() for v in strategy.experimental_local_results(variable.value)
    ]


if __name__ == "__main__":
    single = train(distributed=False)
    double = train(distributed=True)
    np.savez(
        sys.argv[1],
        **{f"single/{k}": v for k, v in single.items()},
        **{f"double/{k}": v for k, v in double.items()},
    )
