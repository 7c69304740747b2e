import json
import os
import sys
import warnings

import keras
import numpy as np
import pytest
from conftest import Bilinear
from conftest import backend
from conftest import compile_model
from conftest import expected_nonzeros
from conftest import to_numpy
from conftest import toy_data
from keras import ops

import keras_sparsity as sparsity
from keras_sparsity.litert import describe_litert
from keras_sparsity.litert import export_litert

L = keras.layers


class Erfinv(L.Layer):
    """An op with no LiteRT built-in kernel: conversion fails."""

    def call(self, x):
        return ops.erfinv(x)


def pruned_and_trained(model, input_shape, num_classes, **kwargs):
    pruned = sparsity.prune_low_magnitude(model, **kwargs)
    compile_model(pruned)
    x, y = toy_data(input_shape, num_samples=16, num_classes=num_classes)
    pruned.fit(x, y, batch_size=16, verbose=0)
    return pruned


def run_litert(path, x):
    """The outputs of a `.tflite` file's interpreter on the batch `x`."""
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    (given,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(given["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    (output,) = interpreter.get_output_details()
    return interpreter.get_tensor(output["index"])


def inputs(shape, num_samples=5):
    rng = np.random.RandomState(1)
    return rng.rand(num_samples, *shape).astype("float32")


@pytest.fixture(scope="module")
def dense_export(tmp_path_factory):
    """64-32-8 MLP pruned to 90% in blocks of 4 inputs, exported pruned."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), L.Dense(32, activation="relu"), L.Dense(8)]
    )
    pruned = pruned_and_trained(
        model,
        (64,),
        8,
        pruning_schedule=sparsity.ConstantSparsity(0.9, 0, frequency=1),
        block_size=(4, 1),
    )
    path = tmp_path_factory.mktemp("dense") / "mlp.tflite"
    return sparsity.strip_pruning(pruned), export_litert(pruned, path)


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory):
    """Conv 3x3, Conv 1x1 pruned to 80%, then a custom layer (unpruned)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(8, 3, activation="relu"),
            L.Conv2D(16, 1),
            L.GlobalAveragePooling2D(),
            Bilinear(),
        ]
    )
    with pytest.warns(UserWarning, match="bilinear"):
        pruned = pruned_and_trained(
            model,
            (8, 8, 3),
            4,
            pruning_schedule=sparsity.ConstantSparsity(0.8, 0, frequency=1),
        )
    final = sparsity.strip_pruning(pruned)
    path = tmp_path_factory.mktemp("cnn") / "cnn.tflite"
    return final, export_litert(final, path)


def by_shape(info):
    return {row["shape"]: row for row in info["tensors"]}


def test_dense_kernels_in_1x4_blocks_stay_sparse(dense_export):
    model, info = dense_export
    assert info["ops"] == ["FULLY_CONNECTED", "FULLY_CONNECTED"]
    assert info["bytes"] == os.path.getsize(info["path"])
    rows = by_shape(info)
    for layer in model.layers:
        kernel = to_numpy(layer.kernel)  # (inputs, outputs)
        blocks = np.abs(kernel).reshape(-1, 4, kernel.shape[1]).sum(axis=1)
        num_blocks = np.count_nonzero(blocks)
        assert num_blocks == expected_nonzeros(blocks.size, 0.9)
        row = rows[kernel.shape[::-1]]  # stored as (outputs, inputs)
        assert row["sparse"] and not row["densified"]
        assert row["block_size"] == (1, 4)
        assert row["stored_values"] == 4 * num_blocks
        assert rows[(kernel.shape[1],)]["sparse"] is False  # the bias
    assert len(info["tensors"]) == 4


def test_dense_export_outputs_match_keras(dense_export):
    model, info = dense_export
    x = inputs((64,))
    np.testing.assert_allclose(
        run_litert(info["path"], x), to_numpy(model(x)), rtol=1e-5, atol=1e-5
    )
    directory = os.path.dirname(info["path"])
    assert os.listdir(directory) == ["mlp.tflite"]


def test_sparse_convolutions_are_densified_and_outputs_match(cnn_export):
    model, info = cnn_export
    assert info["ops"] == [
        "DENSIFY",
        "CONV_2D",
        "DENSIFY",
        "CONV_2D",
        "MEAN",
        "FULLY_CONNECTED",
    ]
    rows = by_shape(info)
    for layer in model.layers[:2]:
        kernel = to_numpy(layer.kernel)  # (h, w, in, out)
        row = rows[(kernel.shape[3], *kernel.shape[:3])]
        assert row["sparse"] and row["densified"]
        assert row["block_size"] is None
        assert row["stored_values"] == np.count_nonzero(kernel)
        assert row["stored_values"] == expected_nonzeros(kernel.size, 0.8)
    custom = rows[(4, 16)]
    assert not custom["sparse"] and custom["stored_values"] == 64
    assert sum(row["sparse"] for row in info["tensors"]) == 2
    x = inputs((8, 8, 3))
    np.testing.assert_allclose(
        run_litert(info["path"], x), to_numpy(model(x)), rtol=1e-5, atol=1e-5
    )


def test_failed_conversion_raises_and_leaves_the_existing_file(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"existing")
    model = keras.Sequential([keras.Input((4,)), Erfinv()])
    problem = "(?s)to LiteRT failed.*ConverterError.*Erfinv"
    with pytest.raises(RuntimeError, match=problem):
        export_litert(model, path)
    assert path.read_bytes() == b"existing"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_classes_of_the_main_script_need_the_tensorflow_backend(tmp_path):
    script_layer = type(
        "ScriptLayer",
        (L.Layer,),
        {"__module__": "__main__", "call": lambda self, x: x * 2.0},
    )
    model = keras.Sequential([keras.Input((4,)), script_layer()])
    path = tmp_path / "m.tflite"
    if backend() == "tensorflow":  # converted in this process
        assert export_litert(model, path)["ops"] == ["MUL"]
    else:
        with pytest.raises(ValueError, match="'ScriptLayer', defined in"):
            export_litert(model, path)
        assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "path, error, problem",
    [
        ("m.keras", ValueError, "must end in '.tflite'.*path='.*m.keras'"),
        ("m", ValueError, "must end in '.tflite'"),
        (7, TypeError, "str or os.PathLike. Received: path=7"),
    ],
)
def test_bad_paths_are_rejected(path, error, problem, tmp_path):
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    if isinstance(path, str):
        path = tmp_path / path
    with pytest.raises(error, match=problem):
        export_litert(model, path)
    assert os.listdir(tmp_path) == []


def test_a_missing_folder_is_named_not_the_temporary_file(tmp_path):
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    path = tmp_path / "missing" / "m.tflite"
    with pytest.raises(FileNotFoundError) as info:
        export_litert(model, path)
    message = str(info.value)
    assert message.endswith(f"Received: path={str(path)!r}")
    assert ".tmp" not in message and ".m.tflite." not in message
    assert os.listdir(tmp_path) == []


def test_bad_models_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="must be built"):
        export_litert(keras.Sequential([L.Dense(3)]), tmp_path / "m.tflite")
    with pytest.raises(TypeError, match="keras.Model. Received: model of"):
        export_litert(L.Dense(3), tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


def test_describe_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.tflite"):
        describe_litert(tmp_path / "absent.tflite")
    (tmp_path / "text.tflite").write_bytes(b"not a flatbuffer" * 4)
    with pytest.raises(ValueError, match="Cannot read the LiteRT file"):
        describe_litert(tmp_path / "text.tflite")


def test_missing_tensorflow_names_the_extra_to_install(monkeypatch, tmp_path):
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    (tmp_path / "any.tflite").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    hint = r'pip install "keras-sparsity\[tensorflow\]"'
    with pytest.raises(ImportError, match=hint):
        export_litert(model, tmp_path / "m.tflite")
    with pytest.raises(ImportError, match=hint):
        describe_litert(tmp_path / "any.tflite")


def test_cli_report_of_a_tflite_file_shows_the_sparse_kernels(
    dense_export, capsys
):
    from keras_sparsity.cli import main

    _, info = dense_export
    assert main(["report", info["path"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(info))
    assert main(["report", info["path"]]) == 0
    text = capsys.readouterr().out
    assert text.count("│ sparse ") == 2
    assert "FULLY_CONNECTED" in text
    assert main(["report", info["path"], "--plot", "x.png"]) == 2
    assert "--plot needs" in capsys.readouterr().err
