"""Hostile and damaged files: `load_compressed` and `keras-sparsity report`
end in one `ValueError` naming the file, run no code from it and allocate
nothing it declares before checking it; an interrupted save leaves the
previous file intact (issue #15, items 3-4).

The fuzz tests mutate real files at random (fixed seeds): their bytes as
they lie on disk, and their manifest and weights with the zip rewritten so
that its checksums hold and the decoder itself is reached.
"""

import copy
import io
import json
import os
import signal
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_sparsity as sparsity
from keras_sparsity import cli
from keras_sparsity import files

pytestmark = pytest.mark.backend_independent

L = keras.layers
# The fuzzed files load with this limit: a mutated size cannot make a
# loader allocate more than a few MiB.
MAX_BYTES = 1 << 22


def crafted_model():
    """Kernels that take every coding path: runs with negative zeros
    (signs), indices, an all-zero kernel, dense statistics and a bias."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32,)),
            L.Dense(24, name="runs"),
            L.BatchNormalization(name="norm"),
            L.Dense(64, name="sparse"),
            L.Dense(4, name="zeros"),
        ]
    )
    rng = np.random.RandomState(0)
    runs = rng.randn(32, 24).astype("float32")
    runs[np.abs(runs) < np.quantile(np.abs(runs), 0.8)] *= 0.0  # -0.0 too
    sparse = np.zeros((24, 64), "float32")
    sparse.flat[[100, 1200]] = 1.5
    model.get_layer("runs").kernel.assign(runs)
    model.get_layer("sparse").kernel.assign(sparse)
    model.get_layer("zeros").kernel.assign(np.zeros((64, 4), "float32"))
    return model


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """`{values: file bytes}` of `crafted_model` saved float32 and int8."""
    folder = tmp_path_factory.mktemp("originals")
    model = crafted_model()
    result = {}
    for values in ("float32", "int8"):
        path = folder / f"{values}.sparse"
        info = sparsity.save_compressed(model, path, values=values)
        encodings = {
            row["layer"]: row["encoding"]
            for row in info["weights"]
            if row["path"].endswith("/0")  # Kernels.
        }
        assert encodings["runs"] == "runs" and encodings["sparse"] == "indices"
        result[values] = path.read_bytes()
    manifest = json.loads(entries_of(result["float32"])["compressed.json"])
    assert any("signs" in meta for meta in manifest["tensors"])
    return result


def entries_of(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def zipped(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def outcome(path):
    """`"loaded"` or `"rejected"` (a ValueError naming the file); any
    other exception fails the test."""
    try:
        model = sparsity.load_compressed(path, max_bytes=MAX_BYTES)
    except ValueError as error:
        assert str(path) in str(error), error
        return "rejected"
    assert isinstance(model, keras.Model)
    return "loaded"


# Byte mutations of the file as it lies on disk.


def mutate_bytes(data, rng):
    data = bytearray(data)
    kind = rng.randint(4)
    if kind == 0:  # Flip 1-8 random bits.
        for position in rng.randint(len(data), size=rng.randint(1, 9)):
            data[position] ^= 1 << rng.randint(8)
    elif kind == 1:  # Truncate.
        del data[rng.randint(len(data)) :]
    elif kind == 2:  # Overwrite a run with random bytes.
        start = rng.randint(len(data))
        length = rng.randint(1, 64)
        data[start : start + length] = rng.bytes(length)
    else:  # Insert or delete bytes.
        start = rng.randint(len(data))
        if rng.rand() < 0.5:
            data[start:start] = rng.bytes(rng.randint(1, 16))
        else:
            del data[start : start + rng.randint(1, 16)]
    return bytes(data)


@pytest.mark.slow
def test_mutated_bytes_are_rejected_with_one_error(originals, tmp_path):
    rng = np.random.RandomState(15)
    path = tmp_path / "mutated.sparse"
    counts = {"loaded": 0, "rejected": 0}
    for case in range(1500):
        original = originals["float32" if case % 2 else "int8"]
        data = mutate_bytes(original, rng)
        path.write_bytes(data)
        counts[outcome(path)] += 1
    # The zip's checksums catch every change to the stored entries; a file
    # loads only where a mutation changed nothing the reader uses.
    assert counts["rejected"] >= 1400, counts


# Mutations of the manifest and weights, in a zip with valid checksums.

HOSTILE_VALUES = [
    -1,
    0,
    1,
    3,
    255,
    2**31,
    2**40,
    2**62,
    2**64,
    1.5,
    float("nan"),
    True,
    None,
    "",
    "x",
    "|O",
    "<f8",
    "(1000000,1000000)f4",
    "V1000000",
    "deflate",
    "indices",
    [],
    [2**40],
    [1, -1],
    {},
    {"codec": "deflate", "length": 1, "size": 2**40},
]


def json_paths(node, prefix=()):
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from json_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from json_paths(value, prefix + (index,))


def mutate_manifest(manifest, rng):
    manifest = copy.deepcopy(manifest)
    paths = [path for path in json_paths(manifest) if path]
    path = paths[rng.randint(len(paths))]
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    value = parent[key]
    if isinstance(parent, dict) and rng.rand() < 0.1:
        del parent[key]
    elif type(value) is int and rng.rand() < 0.5:
        parent[key] = value + int(rng.choice([-2, -1, 1, 2, 8]))
    else:
        choice = HOSTILE_VALUES[rng.randint(len(HOSTILE_VALUES))]
        parent[key] = copy.deepcopy(choice)
    return manifest


def mutate_blob(blob, rng):
    blob = bytearray(blob)
    kind = rng.randint(3)
    if kind == 0:
        for position in rng.randint(len(blob), size=rng.randint(1, 4)):
            blob[position] ^= 1 << rng.randint(8)
    elif kind == 1:
        del blob[rng.randint(len(blob)) :]
    else:
        blob[rng.randint(len(blob)) :] = rng.bytes(rng.randint(1, 32))
    return bytes(blob)


@pytest.mark.slow
def test_mutated_manifests_and_weights_are_rejected_or_load(
    originals, tmp_path
):
    rng = np.random.RandomState(16)
    path = tmp_path / "edited.sparse"
    counts = {"loaded": 0, "rejected": 0}
    for case in range(1500):
        entries = entries_of(originals["float32" if case % 2 else "int8"])
        if case % 3:
            manifest = json.loads(entries["compressed.json"])
            mutated = mutate_manifest(manifest, rng)
            entries["compressed.json"] = json.dumps(mutated).encode()
        else:
            entries["weights.bin"] = mutate_blob(entries["weights.bin"], rng)
        path.write_bytes(zipped(entries))
        counts[outcome(path)] += 1
    # Flipped bits in kept values and edits of fields the reader does not
    # use (a layer's name attribute) still load; everything else is refused.
    assert counts["rejected"] >= 1000 and counts["loaded"] >= 20, counts


# Crafted files.


def edited(original, tmp_path, edit_manifest=None, entries_update=None):
    entries = entries_of(original)
    manifest = json.loads(entries["compressed.json"])
    if edit_manifest:
        edit_manifest(manifest)
    entries["compressed.json"] = json.dumps(manifest).encode()
    entries.update(entries_update or {})
    path = tmp_path / "crafted.sparse"
    path.write_bytes(zipped(entries))
    return path


def huge_zero_tensor(manifest):
    (meta,) = [  # The all-zero kernel, 0 bytes stored.
        meta
        for meta in manifest["tensors"]
        if meta["kept"] == 0 and len(meta["shape"]) == 2
    ]
    assert meta["encoding"] == "runs" and meta["mask"]["size"] == 0
    meta["shape"] = [2**40, 2**10]


def object_dtype(manifest):
    manifest["tensors"][0]["dtype"] = "|O"


def record_dtype(manifest):
    manifest["tensors"][0]["dtype"] = "(4096,4096)f8"


def bomb_part(manifest):
    manifest["tensors"][0]["values"]["size"] = 2**33


def unnamed_attribute(manifest):
    manifest["tensors"][0]["attrs"][""] = "x"


@pytest.mark.parametrize(
    "edit, problem",
    [
        (unnamed_attribute, "invalid tensor entry"),
        (huge_zero_tensor, r"declare \d+ bytes, more than the limit"),
        (object_dtype, "invalid dtype '|O'"),
        (record_dtype, r"invalid dtype '\(4096,4096\)f8'"),
        (bomb_part, "its values part lists 8589934592 bytes"),
    ],
)
def test_declared_sizes_are_checked_before_anything_is_allocated(
    originals, tmp_path, edit, problem
):
    path = edited(originals["float32"], tmp_path, edit)
    # The default limit: a quarter of this machine's memory.
    with pytest.raises(ValueError, match=problem):
        sparsity.load_compressed(path)


def test_an_entry_declaring_more_than_its_bytes_hold_is_refused(
    originals, tmp_path
):
    entries = entries_of(originals["float32"])
    path = tmp_path / "bomb.sparse"
    path.write_bytes(zipped(entries))
    data = bytearray(path.read_bytes())
    # Raise config.json's declared size in its local and central headers.
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("config.json")
    size = info.file_size.to_bytes(4, "little")
    huge = (2**31).to_bytes(4, "little")
    assert data.count(size) >= 2
    path.write_bytes(bytes(data).replace(size, huge))
    with pytest.raises(ValueError, match="'config.json' declares 2147483648"):
        sparsity.load_compressed(path)


def test_a_lambda_layer_in_the_config_runs_only_outside_safe_mode(tmp_path):
    model = keras.Sequential(
        [keras.Input((3,)), L.Lambda(lambda x: x * 2.0), L.Dense(2)]
    )
    path = tmp_path / "lambda.sparse"
    sparsity.save_compressed(model, path)
    with pytest.raises(ValueError, match="safe_mode") as error:
        sparsity.load_compressed(path)
    assert str(path) in str(error.value)
    assert cli.main(["report", str(path), "--no-sizes"]) == 2
    loaded = sparsity.load_compressed(path, safe_mode=False)
    x = np.ones((1, 3), "float32")
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))


def test_max_bytes_is_checked():
    with pytest.raises(ValueError, match="Received: max_bytes=0"):
        sparsity.load_compressed("absent.sparse", max_bytes=0)


def test_report_cli_on_a_crafted_file_exits_2_with_one_line(
    originals, tmp_path, capsys
):
    path = edited(originals["float32"], tmp_path, huge_zero_tensor)
    assert cli.main(["report", str(path), "--no-sizes"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"keras-sparsity report: error: cannot load {path}")
    assert "more than the limit" in error and "\n" not in error


# Interrupted writes.


def test_a_failing_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.sparse"
    path.write_bytes(b"previous")
    with pytest.raises(OSError, match="disk full"):
        with files.replacing(path) as temporary:
            with open(temporary, "wb") as file:
                file.write(b"half of the new")
            raise OSError("disk full")
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.sparse"]


KILLED_SAVE = """
import os, signal, sys
import numpy as np
import keras
import keras_sparsity as sparsity
from keras_sparsity import files

def killed(descriptor):  # The new file is written, not yet renamed.
    os.kill(os.getpid(), signal.SIGKILL)

files.os.fsync = killed
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
sparsity.save_compressed(model, sys.argv[1])
"""


@pytest.mark.slow
def test_a_save_killed_mid_write_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "model.sparse"
    model = crafted_model()
    sparsity.save_compressed(model, path)
    before = path.read_bytes()
    process = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(path)],
        env={**os.environ, "KERAS_BACKEND": "numpy"},
        capture_output=True,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert path.read_bytes() == before
    leftovers = [name for name in os.listdir(tmp_path) if name != path.name]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model.sparse.")
    loaded = sparsity.load_compressed(path)
    for expected, actual in zip(model.get_weights(), loaded.get_weights()):
        assert expected.tobytes() == actual.tobytes()
