"""LiteRT (TFLite) export that keeps pruned weights sparse in the file.

`export_litert` converts a model with TensorFlow's converter and its
`EXPERIMENTAL_SPARSITY` optimization; `describe_litert` lists what a
`.tflite` file holds: its constant tensors, which of them are stored
sparse, and its ops.

The converter runs on the TensorFlow backend only. A model built under
JAX or PyTorch is saved to a temporary `.keras` file and converted by a
Python process started with `KERAS_BACKEND=tensorflow`, which loads it
as Keras loads any `.keras` file; the classes and functions its config
names outside Keras are imported there from their modules.
"""

import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings

import keras
import numpy as np

from keras_sparsity import _compat
from keras_sparsity import files
from keras_sparsity.checks import check_built_model
from keras_sparsity.checks import check_output_path
from keras_sparsity.checks import check_path
from keras_sparsity.strip import strip_pruning
from keras_sparsity.walk import pruning_wrappers

_SUFFIX = ".tflite"
_CONVERT = (
    "import sys; from keras_sparsity.litert import _convert_saved; "
    "_convert_saved(sys.argv[1])"
)


def export_litert(model, path):
    """Writes a LiteRT (TFLite) flatbuffer in which sparse weights stay sparse.

    The model is converted by TensorFlow's `TFLiteConverter` with
    `optimizations=[tf.lite.Optimize.EXPERIMENTAL_SPARSITY]` and built-in
    ops only (files run on any LiteRT runtime, with no TensorFlow ops).
    A model holding `PruneLowMagnitude` wrappers is exported as
    `strip_pruning(model)`. What the converter does with sparse weights
    (measured with TensorFlow 2.21):

    * fully-connected (`Dense`) kernels pruned in blocks of 4 consecutive
      inputs (`prune_low_magnitude(..., block_size=(4, 1))`, TFLite's
      "1x4" blocks) or to about 98% at random are stored sparse and run
      on TFLite's sparse kernel: about 2x faster at batch 1 at 90%;
    * other sparse kernels (unstructured, N:M, other blocks, 1x1
      convolutions) are stored sparse, so the file is smaller, behind a
      `DENSIFY` op that makes them dense when the model is loaded. (By
      its documentation, XNNPack on ARM runs 1x1 convolutions stored so
      sparse, in models that follow its sparse-inference rules; on x86
      it never does.)

    `describe_litert` tells which case each tensor is in.

    The converter needs TensorFlow (`pip install
    "keras-sparsity[tensorflow]"`: tensorflow-cpu 2.21, about 1.3 GB
    installed), at conversion time only: devices run the file with the
    LiteRT runtime (the `ai-edge-litert` package, about 60 MB, or LiteRT
    for Android and iOS). On the TensorFlow backend the model is converted
    in this process. On JAX and PyTorch it is saved as a `.keras` file and
    converted by a new Python process under `KERAS_BACKEND=tensorflow`
    (a few seconds more), which must be able to rebuild it: custom
    layers and functions are imported there from their modules, so they
    must live in a module, not in the `__main__` script. The file is
    written to a temporary file beside `path` and then renamed; when the
    converter fails (say on an op with no LiteRT built-in kernel), a
    `RuntimeError` carries its message and `path` is left as it was.

    Args:
        model: A built `keras.Model`, on any backend.
        path: Where to write the file, ending in `.tflite` (`str` or
            `os.PathLike`).

    Returns:
        What `describe_litert(path)` returns: `path`, `bytes`, `ops` and
        `tensors`.

    Example:

    ```python
    info = sparsity.export_litert(pruned, "model.tflite")
    print([t["shape"] for t in info["tensors"] if t["sparse"]])
    ```
    """
    path = check_output_path(path)
    if not path.endswith(_SUFFIX):
        raise ValueError(
            "Argument `path` must end in '.tflite', the extension LiteRT "
            f"files carry. Received: path={path!r}"
        )
    model = _plain_model(model)
    tf = _tensorflow()
    objects = None
    if keras.backend.backend() != "tensorflow":
        objects = _custom_objects(model)
    with files.replacing(path, suffix=_SUFFIX) as temporary:
        if objects is None:
            _convert_here(model, temporary, tf)
        else:
            _convert_in_tensorflow_process(model, temporary, objects)
    return describe_litert(path)


def describe_litert(path):
    """Lists the constant tensors and ops of a LiteRT (`.tflite`) file.

    A tensor is `sparse` when the file stores it in TFLite's sparse format
    (its sparsity parameters are set). Such a tensor is `densified` when a
    `DENSIFY` op turns it dense as the model loads, so only the file is
    smaller; otherwise the op that reads it runs a sparse kernel (TFLite's
    fully-connected kernel with 1x4 blocks or random sparsity). Needs
    TensorFlow (`pip install "keras-sparsity[tensorflow]"`).

    Args:
        path: A `.tflite` file (`str` or `os.PathLike`).

    Returns:
        A dict: `path`; `bytes`, the file size; `ops`, the op names in
        execution order (`"FULLY_CONNECTED"`, `"DENSIFY"`, ...); `tensors`,
        one dict per constant tensor (weights, biases, shape constants):
        `name` (the converter's: the names of the ops it fused, which
        mostly hold the Keras layer's name), `shape` (the dense shape;
        TFLite stores a `Dense` kernel transposed, as (outputs, inputs)),
        `dtype`, `sparse`, `block_size` (one size per dimension of
        `shape`, e.g. `(1, 4)`, or None when not stored in blocks),
        `stored_values` (values held in the file, the zeros inside
        stored blocks included) and `densified`.

    Example:

    ```python
    info = sparsity.describe_litert("model.tflite")
    print(info["ops"], [t["shape"] for t in info["tensors"] if t["sparse"]])
    ```
    """
    path = check_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No LiteRT file at {path!r}: the file does not exist."
        )
    tf = _tensorflow()
    with warnings.catch_warnings():
        # TensorFlow 2.21 warns that its interpreter moves to LiteRT.
        warnings.simplefilter("ignore")
        try:
            interpreter = tf.lite.Interpreter(model_path=path)
        except ValueError as error:
            raise ValueError(
                f"Cannot read the LiteRT file {path!r}: {error}"
            ) from error
    ops = _compat.litert_ops(interpreter)
    computed = {index for op in ops for index in op["outputs"]}
    computed |= {d["index"] for d in interpreter.get_input_details()}
    densified = {
        index
        for op in ops
        if op["op_name"] == "DENSIFY"
        for index in op["inputs"]
    }
    tensors = []
    for detail in interpreter.get_tensor_details():
        if detail["index"] in computed:
            continue
        shape = tuple(int(n) for n in detail["shape"])
        sparsity = detail["sparsity_parameters"]
        tensors.append(
            {
                "name": detail["name"],
                "shape": shape,
                "dtype": np.dtype(detail["dtype"]).name,
                "sparse": bool(sparsity),
                "block_size": _block_size(sparsity, len(shape)),
                "stored_values": _stored_values(sparsity, shape),
                "densified": detail["index"] in densified,
            }
        )
    return {
        "path": path,
        "bytes": os.path.getsize(path),
        "ops": [op["op_name"] for op in ops],
        "tensors": tensors,
    }


# Input checks.


def _plain_model(model):
    check_built_model(model, "export")
    return strip_pruning(model) if pruning_wrappers(model) else model


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "LiteRT conversion and inspection need TensorFlow (about 1.3 GB "
            'installed): pip install "keras-sparsity[tensorflow]"'
        ) from error
    return tf


# Conversion.


def _convert(model, path, tf):
    """Converts `model`, on the TensorFlow backend, to a file at `path`."""
    model.export(
        path,
        format="litert",
        verbose=False,
        optimizations=[tf.lite.Optimize.EXPERIMENTAL_SPARSITY],
        target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
    )


def _convert_here(model, path, tf):
    """Converts `model` in this process (the TensorFlow backend)."""
    try:
        _convert(model, path, tf)
    except Exception as error:
        raise RuntimeError(
            f"Converting {model.name!r} to LiteRT failed: "
            f"{type(error).__name__}: {error}"
        ) from error


def _custom_objects(model):
    """`[(module, attribute, key)]` for what `model`'s config names outside
    Keras: the conversion process imports `module` and passes its
    `attribute`, if it has one, to `load_model` as `custom_objects[key]`.
    """
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    found = []

    def visit(node):
        if isinstance(node, list):
            for item in node:
                visit(item)
        if not isinstance(node, dict):
            return
        for item in node.values():
            visit(item)
        if "class_name" not in node or "module" not in node:
            return
        module, name = node["module"], node["class_name"]
        if module in (None, "__main__"):
            raise ValueError(
                f"Cannot export {model.name!r} from the "
                f"{keras.backend.backend()} backend: it uses {name!r}, "
                "defined in the `__main__` script, which the TensorFlow "
                "process that converts the model cannot import. Move it "
                "to a module, or export under KERAS_BACKEND=tensorflow."
            )
        if module == "builtins" or module.partition(".")[0] == "keras":
            return
        if name == "function":
            key = node["config"]
            entry = (module, key.rpartition(">")[2], key)
        else:
            entry = (module, name, node.get("registered_name") or name)
        if entry not in found:
            found.append(entry)

    visit(config)
    return found


def _convert_in_tensorflow_process(model, path, objects):
    """Converts `model` in a new Python process under the TensorFlow
    backend, from a `.keras` file."""
    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "model.keras")
        error_path = os.path.join(directory, "error.txt")
        model.save(source)
        environment = dict(
            os.environ,
            KERAS_BACKEND="tensorflow",
            PYTHONPATH=os.pathsep.join(entry for entry in sys.path if entry),
        )
        arguments = {
            "source": source,
            "target": path,
            "objects": objects,
            "error": error_path,
        }
        result = subprocess.run(
            [sys.executable, "-c", _CONVERT, json.dumps(arguments)],
            env=environment,
            capture_output=True,
            text=True,
        )
        if result.returncode == 0:
            return
        if os.path.exists(error_path):
            with open(error_path) as file:
                error = file.read()
        else:
            error = result.stderr[-3000:]
    raise RuntimeError(
        f"Converting {model.name!r} to LiteRT failed in the process "
        f"(KERAS_BACKEND=tensorflow) that loads its .keras file: {error}"
    )


def _convert_saved(arguments):
    """The conversion process: loads a `.keras` file and converts it,
    writing what went wrong, if anything, to the `error` file."""
    arguments = json.loads(arguments)
    try:
        custom_objects = {}
        for module_name, attribute, key in arguments["objects"]:
            module = importlib.import_module(module_name)
            if hasattr(module, attribute):
                custom_objects[key] = getattr(module, attribute)
        # The file was written a moment ago from the caller's own model,
        # so `Lambda` layers in it may be rebuilt from their bytecode.
        model = keras.saving.load_model(
            arguments["source"],
            custom_objects=custom_objects,
            compile=False,
            safe_mode=False,
        )
        _convert(model, arguments["target"], _tensorflow())
    except Exception as error:
        with open(arguments["error"], "w") as file:
            file.write(f"{type(error).__name__}: {error}")
        raise


# Reading a file.


def _block_size(sparsity, rank):
    """The block shape, one size per dense dimension, or None.

    Block dimensions follow the dense ones in traversal order; each is
    dense, and `block_map[i]` names the dense dimension it splits.
    """
    block_map = list(sparsity.get("block_map", []))
    if not block_map:
        return None
    order = [int(dim) for dim in sparsity["traversal_order"]]
    metadata = sparsity["dim_metadata"]
    block = [1] * rank
    for i, dim in enumerate(block_map):
        block[int(dim)] = int(metadata[order.index(rank + i)]["dense_size"])
    return tuple(block)


def _stored_values(sparsity, shape):
    """Values the file holds: along the traversal, a dense dimension
    multiplies the count, a compressed one replaces it by its indices."""
    if not sparsity:
        return math.prod(shape)
    count = 1
    for metadata in sparsity["dim_metadata"]:
        if metadata["format"] == 0:
            count *= int(metadata["dense_size"])
        else:
            count = len(metadata["array_indices"])
    return count
