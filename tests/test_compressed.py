import json
import math
import os
import re
import zipfile

import keras
import numpy as np
import pytest
from conftest import Bilinear
from conftest import build_simple_dense_model
from conftest import compile_model
from conftest import expected_nonzeros
from conftest import to_numpy
from conftest import toy_data

import keras_sparsity as sparsity
from keras_sparsity.compressed import information_bound_bytes

L = keras.layers


@pytest.fixture(scope="module")
def mlp():
    """784-256-256-10, pruned to 80% by the library, then stripped."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            L.Dense(256, activation="relu"),
            L.Dense(256, activation="relu"),
            L.Dense(10),
        ]
    )
    pruned = sparsity.prune_low_magnitude(
        model, sparsity.ConstantSparsity(0.8, 0, frequency=1)
    )
    compile_model(pruned)
    x, y = toy_data((784,), num_samples=16, num_classes=10)
    pruned.fit(x, y, batch_size=16, verbose=0)
    final = sparsity.strip_pruning(pruned)
    for layer in final.layers:
        kernel = to_numpy(layer.kernel)
        assert np.count_nonzero(kernel) == expected_nonzeros(kernel.size, 0.8)
    return final


def inputs(num_features=784, num_samples=4):
    rng = np.random.RandomState(1)
    return rng.rand(num_samples, num_features).astype("float32")


def weight_of(model, row):
    """The weight a report row describes: `layers/<key>/vars/<index>`."""
    index = int(row["path"].rpartition("/")[2])
    return to_numpy(model.get_layer(row["layer"]).weights[index])


def assert_bit_identical(expected, actual):
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def test_float32_round_trip_is_bit_exact(mlp, tmp_path):
    path = tmp_path / "mlp.zip"
    info = sparsity.save_compressed(mlp, path)
    loaded = sparsity.load_compressed(path)
    assert_bit_identical(mlp.get_weights(), loaded.get_weights())
    x = inputs()
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(mlp(x)))
    assert info["compressed_bytes"] == os.path.getsize(path)
    assert {row["max_abs_error"] for row in info["weights"]} == {0.0}
    assert [row["encoding"] for row in info["weights"][::2]] == ["runs"] * 3


def test_size_at_80_percent_is_near_the_information_bound(mlp, tmp_path):
    exact = sparsity.save_compressed(mlp, tmp_path / "f32.zip")
    small = sparsity.save_compressed(mlp, tmp_path / "i8.zip", values="int8")
    assert exact["ratio"] >= 4.3
    assert small["ratio"] >= 12.0
    for info in (exact, small):
        assert info["ratio"] <= info["bound_ratio"]
        assert info["ratio"] == info["dense_keras_bytes"] / os.path.getsize(
            info["path"]
        )
    assert 4.4 < exact["bound_ratio"] < 4.7
    assert exact["information_bound_bytes"] == information_bound_bytes(mlp)
    # The reference is the weights as Keras saves them, without the
    # optimizer state that `mlp.save` would add (a built Adam: 3x).
    plain = keras.Sequential.from_config(mlp.get_config())
    plain.set_weights(mlp.get_weights())
    plain.save(tmp_path / "plain.keras")
    keras_bytes = os.path.getsize(tmp_path / "plain.keras")
    assert abs(exact["dense_keras_bytes"] / keras_bytes - 1) < 0.01
    mlp.save(tmp_path / "with_optimizer.keras")
    assert os.path.getsize(tmp_path / "with_optimizer.keras") > 2 * keras_bytes


@pytest.mark.parametrize(
    "values, largest_rel_error",
    [("float16", 2.0**-11), ("int8", 0.5 / 127)],
)
def test_quantized_values_have_the_bounded_error_they_report(
    mlp, tmp_path, values, largest_rel_error
):
    path = tmp_path / f"{values}.zip"
    info = sparsity.save_compressed(mlp, path, values=values)
    loaded = sparsity.load_compressed(path)
    assert len(info["weights"]) == len(mlp.weights)
    for row in info["weights"]:
        original, new = weight_of(mlp, row), weight_of(loaded, row)
        assert new.dtype == original.dtype
        error = np.abs(new.astype("float64") - original.astype("float64"))
        assert row["max_abs_error"] == error.max()
        assert row["max_rel_error"] == error.max() / np.abs(original).max()
        if original.ndim >= 2:
            assert row["stored_as"] == values
            assert 0 < row["max_rel_error"] <= largest_rel_error * 1.000001
            np.testing.assert_array_equal(new[original == 0], 0.0)
        else:
            assert row["stored_as"] == "float32"
            assert new.tobytes() == original.tobytes()
    x = inputs()
    np.testing.assert_allclose(
        to_numpy(loaded(x)), to_numpy(mlp(x)), rtol=0, atol=0.05
    )


def test_int8_scales_are_per_output_channel(tmp_path):
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False)])
    kernel = np.array(
        [
            [1.0, 0.0, 100.0],
            [0.5, 0.01, -50.0],
            [-0.25, 0.0, 0.0],
            [0.0, -0.02, 25.0],
        ],
        "float32",
    )
    model.set_weights([kernel])
    path = tmp_path / "m.zip"
    sparsity.save_compressed(model, path, values="int8")
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("compressed.json"))["tensors"][0]
        blob = archive.read("weights.bin")
    scales = np.frombuffer(blob[-12:], "<f4")
    assert meta["scales"]["size"] == 12
    np.testing.assert_array_equal(
        scales, np.float32([1.0, 0.02, 100.0]) / np.float32(127)
    )
    restored = to_numpy(sparsity.load_compressed(path).weights[0])
    np.testing.assert_array_equal(restored[:, 0] / scales[0], [127, 64, -32, 0])


def test_every_encoding_round_trips_exactly(tmp_path):
    rng = np.random.RandomState(0)
    names = ["sparse", "half", "few", "zero", "full"]
    model = keras.Sequential(
        [keras.Input((64,))] + [L.Dense(64, name=name) for name in names]
    )
    kernels = [rng.randn(64, 64).astype("float32") for _ in names]
    kernels[0][rng.rand(64, 64) < 0.8] = 0.0
    kernels[0][0, :3] = -0.0  # Pruned, with its sign stored aside.
    kernels[1][rng.rand(64, 64) < 0.5] = 0.0
    kernels[2][:] = 0.0
    kernels[2][[0, 30, 63], [5, 0, 63]] = [1.0, -2.0, 3.0]
    kernels[3][:] = 0.0
    weights = []
    for kernel in kernels:
        weights += [kernel, np.zeros(64, "float32")]
    model.set_weights(weights)
    path = tmp_path / "m.zip"
    info = sparsity.save_compressed(model, path)
    encodings = {
        (row["layer"], row["path"][-1]): row["encoding"]
        for row in info["weights"]
    }
    assert [encodings[name, "0"] for name in names] == [
        "runs",
        "bitmask",
        "indices",
        "runs",
        "dense",
    ]
    assert encodings["sparse", "1"] == "runs"  # an all-zero bias
    nonzeros = {
        (row["layer"], row["path"][-1]): row["nonzeros"]
        for row in info["weights"]
    }
    assert [nonzeros[name, "0"] for name in names] == [
        np.count_nonzero(kernels[0]),
        np.count_nonzero(kernels[1]),
        3,
        0,
        64 * 64,
    ]
    loaded = sparsity.load_compressed(path)
    assert_bit_identical(weights, loaded.get_weights())
    assert np.signbit(to_numpy(loaded.layers[0].kernel)[0, :3]).all()


def hand_pruned_kernel(shape=(256, 64), fraction=0.8, seed=0):
    """`(w * mask, mask)`: the entries pruned from negative weights of a
    normal kernel hold -0.0, as in hand-pruned or TFMOT-stripped models."""
    rng = np.random.RandomState(seed)
    w = rng.randn(*shape).astype("float32")
    mask = (np.abs(w) > np.quantile(np.abs(w), fraction)).astype("float32")
    return w * mask, mask


def dense_model(kernel):
    model = keras.Sequential(
        [keras.Input(kernel.shape[:1]), L.Dense(kernel.shape[1])]
    )
    model.set_weights([kernel, np.zeros(kernel.shape[1], "float32")])
    return model


def test_negative_zeros_are_pruned_and_load_bit_exact(tmp_path):
    negative, mask = hand_pruned_kernel()
    positive = np.where(mask > 0, negative, np.float32(0))
    all_negative = np.where(mask > 0, negative, np.float32(-0.0))
    num_zeros = int((mask == 0).sum())
    assert 0.4 * num_zeros < np.signbit(negative[mask == 0]).sum()
    infos = {}
    for name, kernel in [
        ("positive", positive),
        ("negative", negative),
        ("all_negative", all_negative),
    ]:
        path = tmp_path / f"{name}.zip"
        infos[name] = info = sparsity.save_compressed(dense_model(kernel), path)
        assert info["weights"][0]["nonzeros"] == np.count_nonzero(mask)
        assert info["weights"][0]["encoding"] == "runs"
        assert info["ratio"] <= info["bound_ratio"]
        restored = to_numpy(sparsity.load_compressed(path).layers[0].kernel)
        assert restored.tobytes() == kernel.tobytes()
        np.testing.assert_array_equal(np.signbit(restored), np.signbit(kernel))
    extra = (
        infos["negative"]["compressed_bytes"]
        - (infos["positive"]["compressed_bytes"])
    )
    # Only the sign of each zero is added: -0.0 used to be stored as a kept
    # value (1.6x instead of 4.5x).
    assert 0 < extra <= math.ceil(num_zeros / 8) + 64
    assert infos["negative"]["ratio"] > 0.88 * infos["positive"]["ratio"]
    assert infos["all_negative"]["ratio"] > 0.99 * infos["positive"]["ratio"]


def test_information_bound_counts_the_signs_of_negative_zeros():
    negative, mask = hand_pruned_kernel()
    positive = np.where(mask > 0, negative, np.float32(0))
    zeros = negative[mask == 0]
    share = np.signbit(zeros).mean()
    entropy = -(share * math.log2(share) + (1 - share) * math.log2(1 - share))
    signs = zeros.size * entropy / 8
    bounds = [
        information_bound_bytes(dense_model(kernel))
        for kernel in (positive, negative)
    ]
    assert abs(bounds[1] - bounds[0] - signs) <= 1
    quantized = [
        information_bound_bytes(dense_model(kernel), "int8")
        for kernel in (positive, negative)
    ]
    assert quantized[0] == quantized[1]


def test_version_1_files_still_load(monkeypatch, tmp_path):
    # Version 1 kept -0.0 as a value: what its writer did, reproduced.
    from keras_sparsity import coding
    from keras_sparsity import compressed

    def kept_by_bits(flat):
        return flat.view(f"u{flat.dtype.itemsize}") != 0

    negative, mask = hand_pruned_kernel(shape=(32, 16))
    model = dense_model(negative)
    path = tmp_path / "v1.zip"
    with monkeypatch.context() as patch:
        patch.setattr(coding, "_kept", kept_by_bits)
        patch.setattr(compressed, "VERSION", 1)
        info = sparsity.save_compressed(model, path)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("compressed.json"))
    assert manifest["version"] == 1
    assert all("signs" not in meta for meta in manifest["tensors"])
    assert info["weights"][0]["nonzeros"] > np.count_nonzero(mask)
    loaded = sparsity.load_compressed(path)
    assert_bit_identical(model.get_weights(), loaded.get_weights())
    sparsity.save_compressed(model, tmp_path / "v2.zip")
    with zipfile.ZipFile(tmp_path / "v2.zip") as archive:
        manifest = json.loads(archive.read("compressed.json"))
    assert manifest["version"] == 2
    assert "signs" in manifest["tensors"][0]


@pytest.mark.parametrize("values", ["float32", "float16", "int8"])
def test_information_bound_counts_mask_entropy_and_value_bits(values):
    model = keras.Sequential([keras.Input((10,)), L.Dense(10, use_bias=False)])
    kernel = np.zeros((10, 10), "float32")
    kernel.flat[::5] = 1.0  # 20 of 100 kept
    model.set_weights([kernel])
    entropy = -(0.2 * math.log2(0.2) + 0.8 * math.log2(0.8))
    value_bits = {"float32": 32, "float16": 16, "int8": 8}[values]
    scale_bits = 10 * 32 if values == "int8" else 0
    expected = math.ceil((100 * entropy + 20 * value_bits + scale_bits) / 8)
    assert information_bound_bytes(model, values) == expected


def test_pruned_model_is_stripped_and_loads_as_plain_keras(tmp_path):
    pruned = sparsity.prune_low_magnitude(
        build_simple_dense_model(),
        sparsity.ConstantSparsity(0.5, 0, frequency=1),
    )
    compile_model(pruned)
    x, y = toy_data()
    pruned.fit(x, y, batch_size=8, verbose=0)
    path = tmp_path / "m.zip"
    sparsity.save_compressed(pruned, path)
    with zipfile.ZipFile(path) as archive:
        assert b"keras_sparsity" not in archive.read("config.json")
    loaded = sparsity.load_compressed(path)
    assert [type(layer) for layer in loaded.layers] == [L.Dense, L.Dense]
    stripped = sparsity.strip_pruning(pruned)
    assert_bit_identical(stripped.get_weights(), loaded.get_weights())
    assert loaded.compiled and to_numpy(loaded.optimizer.iterations) == 0
    loaded.fit(x, y, batch_size=8, verbose=0)
    assert not sparsity.load_compressed(path, compile=False).compiled


def test_unregistered_custom_layers_load_with_custom_objects(tmp_path):
    model = keras.Sequential([keras.Input((6,)), Bilinear()])
    path = tmp_path / "m.zip"
    sparsity.save_compressed(model, path)
    with pytest.raises(TypeError, match="Bilinear"):
        sparsity.load_compressed(path)
    loaded = sparsity.load_compressed(
        path, custom_objects={"Bilinear": Bilinear}
    )
    assert isinstance(loaded.layers[0], Bilinear)
    assert_bit_identical(model.get_weights(), loaded.get_weights())


@keras.saving.register_keras_serializable(package="test_compressed")
class TwoDense(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = L.Dense(8, activation="relu")
        self.second = L.Dense(3)

    def call(self, x):
        return self.second(self.first(x))


def nested_functional():
    inner = keras.Sequential([L.Dense(6), L.BatchNormalization()], name="in")
    x = keras.Input((5,))
    shared = L.Dense(5)
    return keras.Model(x, L.Dense(2)(inner(shared(shared(x)))))


def subclassed():
    model = TwoDense()
    model(np.zeros((1, 5), "float32"))
    return model


def bfloat16_kernel():
    return keras.Sequential(
        [keras.Input((5,)), L.Dense(4, dtype="bfloat16"), L.Dense(2)]
    )


@pytest.mark.parametrize(
    "build",
    [nested_functional, subclassed, bfloat16_kernel],
    ids=["nested_functional", "subclassed", "bfloat16"],
)
def test_weights_are_matched_by_keras_structure(build, tmp_path):
    model = build()
    rng = np.random.RandomState(0)
    model.set_weights(
        [
            np.where(rng.rand(*w.shape) < 0.7, 0, rng.randn(*w.shape)).astype(
                w.dtype
            )
            for w in model.get_weights()
        ]
    )
    path = tmp_path / "m.zip"
    sparsity.save_compressed(model, path)
    loaded = sparsity.load_compressed(path)
    assert type(loaded) is type(model)
    assert_bit_identical(model.get_weights(), loaded.get_weights())
    x = np.random.RandomState(1).rand(4, 5).astype("float32")
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))


def small_model():
    model = build_simple_dense_model()
    model.set_weights([w + 1 for w in model.get_weights()])
    return model


@pytest.mark.parametrize("values", ["int4", None, "FLOAT32"])
def test_bad_values_raise_and_leave_the_existing_file(values, tmp_path):
    path = tmp_path / "m.zip"
    sparsity.save_compressed(small_model(), path)
    before = path.read_bytes()
    message = f"Argument `values`.*'int8'.*Received: values={values!r}"
    with pytest.raises(ValueError, match=message):
        sparsity.save_compressed(small_model(), path, values=values)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.zip"]


def test_float16_overflow_raises_and_leaves_the_existing_file(tmp_path):
    path = tmp_path / "m.zip"
    path.write_bytes(b"existing")
    model = small_model()
    model.layers[0].kernel.assign(np.full((10, 8), 1e6, "float32"))
    with pytest.raises(ValueError, match="float16's range"):
        sparsity.save_compressed(model, path, values="float16")
    assert path.read_bytes() == b"existing"


def test_failed_rename_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        sparsity.save_compressed(small_model(), tmp_path / "taken")
    assert os.listdir(tmp_path) == ["taken"]


def test_a_missing_folder_is_named_not_the_temporary_file(tmp_path):
    path = tmp_path / "missing" / "m.zip"
    with pytest.raises(FileNotFoundError) as info:
        sparsity.save_compressed(small_model(), path)
    message = str(info.value)
    assert message.endswith(f"Received: path={str(path)!r}")
    assert ".tmp" not in message and ".m.zip." not in message
    assert os.listdir(tmp_path) == []


def test_unbuilt_model_is_rejected(tmp_path):
    model = keras.Sequential([L.Dense(3)])
    with pytest.raises(ValueError, match="must be built"):
        sparsity.save_compressed(model, tmp_path / "m.zip")


def test_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "absent.zip"
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(path)))):
        sparsity.load_compressed(path)


def rewrite(path, edit_manifest=None, edit_blob=None):
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(entries["compressed.json"])
    if edit_manifest:
        edit_manifest(manifest)
    entries["compressed.json"] = json.dumps(manifest).encode()
    if edit_blob:
        entries["weights.bin"] = edit_blob(entries["weights.bin"])
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def newer(manifest):
    manifest["version"] = 3


def longer_values(manifest):
    manifest["tensors"][0]["values"]["length"] += 4


def fewer_kept(manifest):
    manifest["tensors"][0]["kept"] -= 1


def unknown_encoding(manifest):
    manifest["tensors"][0]["encoding"] = "huffman"


def no_manifest_field(manifest):
    del manifest["tensors"][0]["shape"]


def wider_values(manifest):
    manifest["tensors"][0]["values"]["dtype"] = "<f8"


def extra_bytes(blob):
    return blob + b"\0"


@pytest.mark.parametrize(
    "edit_manifest, edit_blob, problem",
    [
        (newer, None, "newer keras-sparsity.*format version 3"),
        (longer_values, None, "corrupt or truncated"),
        (fewer_kept, None, "mask keeps"),
        (unknown_encoding, None, "unknown encoding 'huffman'"),
        (no_manifest_field, None, "missing manifest field 'shape'"),
        (wider_values, None, "float32 cannot be stored as float64"),
        (None, extra_bytes, "weights.bin holds"),
    ],
    ids=["newer", "sizes", "kept", "encoding", "field", "dtype", "blob"],
)
def test_edited_files_raise_naming_file_and_problem(
    edit_manifest, edit_blob, problem, tmp_path
):
    path = tmp_path / "m.zip"
    sparsity.save_compressed(small_model(), path)
    rewrite(path, edit_manifest, edit_blob)
    with pytest.raises(ValueError, match=problem) as error:
        sparsity.load_compressed(path)
    assert str(path) in str(error.value)


def test_corrupt_and_truncated_files_raise(tmp_path):
    path = tmp_path / "m.zip"
    sparsity.save_compressed(small_model(), path)
    data = path.read_bytes()
    cases = {
        "text.zip": (b"not a model", "not a zip file"),
        "half.zip": (data[: len(data) // 2], "not a zip file"),
    }
    flipped = bytearray(data)
    flipped[data.index(b"weights.bin") + 60] ^= 0xFF  # inside the blob
    cases["flipped.zip"] = (bytes(flipped), "corrupt or truncated")
    for name, (content, problem) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=problem) as error:
            sparsity.load_compressed(tmp_path / name)
        assert name in str(error.value)


def test_plain_keras_file_is_not_mistaken_for_a_compressed_one(tmp_path):
    path = tmp_path / "m.keras"
    small_model().save(path)
    with pytest.raises(ValueError, match="no compressed.json manifest"):
        sparsity.load_compressed(path)


def test_a_model_of_only_zeros_saves_and_loads(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.set_weights([np.zeros((4, 3), "float32"), np.zeros(3, "float32")])
    info = sparsity.save_compressed(model, tmp_path / "zeros.sparse")
    assert info["information_bound_bytes"] == 0
    assert info["bound_ratio"] is None
    loaded = sparsity.load_compressed(tmp_path / "zeros.sparse")
    assert not np.any(to_numpy(loaded.layers[0].kernel))
