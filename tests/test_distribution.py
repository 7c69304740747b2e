"""Data-parallel fit of a pruned model on two virtual CPU devices.

Each run is a subprocess, since devices must be configured before the
framework starts: `distributed_fit.py` trains the same pruned model on one
device and on two and saves both results.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import backend

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_fit.py")


@pytest.mark.skipif(
    backend() not in ("jax", "tensorflow"),
    reason="PyTorch has no data-parallel engine in Keras fit (see README)",
)
def test_data_parallel_fit_gives_the_single_device_masks(tmp_path):
    out = os.fspath(tmp_path / "masks.npz")
    # Two virtual CPU devices, also on a machine with one GPU (which JAX
    # would pick, and TensorFlow would add as a third replica).
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        CUDA_VISIBLE_DEVICES="",
    )
    done = subprocess.run(
        [sys.executable, SCRIPT, out],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = np.load(out)
    for index in range(2):
        single = result[f"single/mask{index}"]
        double = result[f"double/mask{index}"]
        np.testing.assert_array_equal(single, double)
        assert bool(result[f"double/replicas_agree{index}"])
        assert single.mean() == pytest.approx(0.2, abs=0.01)
        weight = result[f"double/weight{index}"]
        assert np.all(weight[double == 0] == 0)
        np.testing.assert_allclose(
            weight, result[f"single/weight{index}"], atol=1e-6
        )


MODEL_PARALLEL = os.path.join(
    os.path.dirname(__file__), "model_parallel_fit.py"
)


@pytest.mark.skipif(
    backend() != "jax", reason="keras.distribution.ModelParallel is JAX-only"
)
def test_sharded_kernels_give_the_single_device_global_masks(tmp_path):
    out = os.fspath(tmp_path / "masks.npz")
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        CUDA_VISIBLE_DEVICES="",
    )
    done = subprocess.run(
        [sys.executable, MODEL_PARALLEL, out],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = np.load(out)
    kept = 0
    for index in range(3):
        single = result[f"single/mask{index}"]
        double = result[f"double/mask{index}"]
        np.testing.assert_array_equal(single, double)
        assert int(result[f"double/shards{index}"]) == 2  # really sharded
        np.testing.assert_allclose(
            result[f"double/weight{index}"],
            result[f"single/weight{index}"],
            atol=1e-5,
        )
        kept += int(double.sum())
    assert kept == round((160 + 128 + 32) * 0.2)
