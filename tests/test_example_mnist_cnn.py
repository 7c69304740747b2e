"""Runs `examples/mnist_cnn.py` tiny on the current backend.

The data are MNIST-format IDX files written by the test (random images), so
nothing depends on the real MNIST files; only the pruning is checked.
"""

import contextlib
import gzip
import importlib.util
import io
import pathlib
import re
import zipfile

import keras
import numpy as np
import pytest
from conftest import expected_nonzeros

import keras_sparsity as sparsity

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "mnist_cnn.py"
NUM_IMAGES = 384


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_cnn", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    return load_example()


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    write_idx(
        directory / "t10k-images-idx3-ubyte.gz",
        rng.integers(0, 256, (NUM_IMAGES, 28, 28)),
    )
    write_idx(
        directory / "t10k-labels-idx1-ubyte.gz",
        rng.integers(0, 10, NUM_IMAGES),
    )
    return directory


@pytest.fixture(scope="module")
def run(example, data_dir, tmp_path_factory):
    """(stdout, out dir) of one tiny CNN run: 2 steps per epoch.

    256 training images are 2 batches of 128, so the schedule's end_step is
    1 and the second fine-tuning step applies the final sparsity.
    """
    out_dir = tmp_path_factory.mktemp("mnist_cnn_out")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        example.main(
            [
                "--data-dir", str(data_dir),
                "--num-train", "256",
                "--num-test", "128",
                "--epochs", "1",
                "--prune-epochs", "1",
                "--out-dir", str(out_dir),
            ]
        )
    return stdout.getvalue(), out_dir


def test_build_cnn_is_the_tutorial_model(example):
    model = example.build_cnn(keras)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Reshape", "Conv2D", "MaxPooling2D", "Flatten", "Dense",
    ]
    assert model.count_params() == 20410
    assert [tuple(w.shape) for w in model.weights] == [
        (3, 3, 1, 12), (12,), (2028, 10), (10,),
    ]


def test_build_mlp_is_784_1024_1024_10(example):
    model = example.build_mlp(keras)
    assert model.count_params() == 1863690
    assert [tuple(w.shape) for w in model.weights if len(w.shape) == 2] == [
        (784, 1024), (1024, 1024), (1024, 10),
    ]


@pytest.mark.parametrize(
    "num_train, prune_epochs, end_step",
    [(8000, 2, 125), (8000, 4, 125), (8000, 1, 62), (256, 1, 1)],
)
def test_schedule_ends_on_the_last_step_of_epoch_two(
    example, num_train, prune_epochs, end_step
):
    schedule = example.pruning_schedule(sparsity, num_train, prune_epochs, 0.8)
    assert schedule.end_step == end_step
    assert (schedule.initial_sparsity, schedule.final_sparsity) == (0.5, 0.8)


def test_example_prints_backend_accuracy_and_sizes(run):
    stdout, _ = run
    assert f"Keras backend: {keras.backend.backend()}" in stdout
    accuracy_line = r"^Test accuracy: dense \d\.\d{4}, pruned \d\.\d{4}$"
    assert re.search(accuracy_line, stdout, re.MULTILINE)
    assert "Zipped .keras size: dense" in stdout
    assert "Sparsity of " in stdout and "(3, 3, 1, 12): 0.7963" in stdout


def test_stripped_kernels_keep_exactly_round_to_k_weights(run):
    _, out_dir = run
    model = keras.saving.load_model(out_dir / "cnn_pruned.keras")
    kernels = {
        tuple(w.shape): keras.ops.convert_to_numpy(w)
        for w in model.weights
        if len(w.shape) >= 2
    }
    assert sorted(kernels) == [(3, 3, 1, 12), (2028, 10)]
    for value in kernels.values():
        assert np.count_nonzero(value) == expected_nonzeros(value.size, 0.8)
    # 108 * 0.2 = 21.6 rounds to 22 kept, 20280 * 0.2 = 4056 kept.
    assert np.count_nonzero(kernels[(3, 3, 1, 12)]) == 22
    assert np.count_nonzero(kernels[(2028, 10)]) == 4056


def test_pruned_file_has_no_pruning_objects_and_zips_small(run):
    _, out_dir = run
    with zipfile.ZipFile(out_dir / "cnn_pruned.keras") as archive:
        config = archive.read("config.json").decode()
    assert "keras_sparsity" not in config
    dense = (out_dir / "cnn_dense.zip").stat().st_size
    pruned = (out_dir / "cnn_pruned.zip").stat().st_size
    assert pruned * 2.5 < dense


def test_compressed_file_loads_the_same_weights(run):
    _, out_dir = run
    saved = keras.saving.load_model(out_dir / "cnn_pruned.keras")
    loaded = sparsity.load_compressed(out_dir / "cnn_pruned.sparse")
    for a, b in zip(saved.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--final-sparsity", "1.0"], "--final-sparsity"),
        (["--final-sparsity", "0.3"], "--final-sparsity"),
        (["--epochs", "0"], "--epochs"),
        (["--prune-epochs", "0"], "--prune-epochs"),
    ],
)
def test_bad_arguments_exit_naming_the_flag(example, capsys, argv, flag):
    with pytest.raises(SystemExit):
        example.parse_args(argv)
    assert f"Received: {flag}=" in capsys.readouterr().err
