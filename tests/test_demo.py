"""Runs `examples/demo_digits.py` end to end on the current backend."""

import os
import pathlib
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

DEMO = pathlib.Path(__file__).parents[1] / "examples" / "demo_digits.py"
FINAL_SPARSITY = 0.8  # the demo's PolynomialDecay final_sparsity
ACCURACY_LINE = re.compile(
    r"^Test accuracy: dense \d+\.\d\d%, pruned \d+\.\d\d%$", re.MULTILINE
)


def expected_nonzeros(size):
    """`round(size * (1 - 0.8))` in float32, half to even, at least 1."""
    kept = np.round(
        np.float32(size) * (np.float32(1.0) - np.float32(FINAL_SPARSITY))
    )
    return max(int(kept), 1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(completed process, output dir) of one `--epochs 1` run.

    One epoch of fine-tuning is 45 optimizer steps and the demo sets
    `end_step=44`, so the last step applies the final sparsity.
    """
    out_dir = tmp_path_factory.mktemp("demo_digits")
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    env["COLUMNS"] = "120"
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, str(DEMO), "--epochs", "1", "--out-dir", str(out_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result, out_dir


def test_demo_exits_zero_and_prints_backend_and_accuracy(demo):
    result, _ = demo
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Keras backend: {keras.backend.backend()}" in result.stdout
    assert ACCURACY_LINE.search(result.stdout), result.stdout
    assert "Zipped .keras size: dense" in result.stdout


def test_demo_stripped_file_has_no_keras_sparsity_objects(demo):
    _, out_dir = demo
    with zipfile.ZipFile(out_dir / "digits_pruned.keras") as archive:
        config = archive.read("config.json").decode()
    assert "keras_sparsity" not in config
    assert "PruneLowMagnitude" not in config


def test_demo_stripped_kernels_keep_exactly_round_to_k_weights(demo):
    _, out_dir = demo
    model = keras.saving.load_model(out_dir / "digits_pruned.keras")
    kernels = [w for w in model.weights if len(w.shape) >= 2]
    assert [tuple(w.shape) for w in kernels] == [
        (3, 3, 1, 16),
        (3, 3, 16, 32),
        (512, 64),
        (64, 10),
    ]
    for kernel in kernels:
        value = keras.ops.convert_to_numpy(kernel)
        assert np.count_nonzero(value) == expected_nonzeros(value.size), (
            kernel.path
        )


def test_demo_pruned_file_compresses_at_least_twice_as_well(demo):
    _, out_dir = demo
    dense = (out_dir / "digits_dense.zip").stat().st_size
    pruned = (out_dir / "digits_pruned.zip").stat().st_size
    assert pruned * 2 < dense
