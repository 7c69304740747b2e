"""Compressed saving: sparse weights as entropy-coded masks plus kept values.

The file is a zip holding what Keras writes to a `.keras` file (its
`config.json`, `metadata.json` and any assets, copied as they are) plus
`weights.bin` and a JSON manifest, `compressed.json`, in place of
`model.weights.h5`. Each tensor of the weights file is stored in the
smallest of these forms, measured per tensor:

* `"dense"`: all values;
* `"bitmask"`: a packed bitmask of the kept (non-zero) positions;
* `"runs"`: per kept value, the count of zeros before it as a byte
  (255 means "255 zeros, go on"), which at 80% sparsity codes the mask
  within about 2% of its entropy;
* `"indices"`: the sorted flat positions of the kept values, as uint16 or
  uint32, as differences;

plus the kept values, raw. A mask is stored raw or DEFLATE-coded,
whichever is smaller. Tensors are named by their path in Keras' weights
file (`"layers/dense/vars/0"`) and are loaded back by Keras itself, so
they are matched to variables as Keras matches them, by the model's
object structure (`variable.path` is not stable: a model rebuilt from its
config names its variables differently). Optimizer state is not stored.
"""

import io
import json
import math
import os
import tempfile
import zipfile
import zlib

import h5py
import keras
import numpy as np

from keras_sparsity.callbacks import pruning_wrappers
from keras_sparsity.prune import strip_pruning

FORMAT = "keras_sparsity.compressed"
VERSION = 1
VALUES = ("float32", "float16", "int8")

_MANIFEST = "compressed.json"
_BLOB = "weights.bin"
_KERAS_WEIGHTS = "model.weights.h5"
_CODECS = ("raw", "deflate")
_STORED = {"float16": np.dtype("<f2"), "int8": np.dtype("i1")}
_INDEX_DTYPES = (np.dtype("<u2"), np.dtype("<u4"))


def save_compressed(model, path, values="float32"):
    """Saves a model with its sparse weights compressed, near their entropy.

    Pruned weights cost the entropy of their mask (about 0.72 bits per
    weight at 80% sparsity) instead of 32 bits, and kept values their
    stored width. With `values="float32"` the weights load back bit for bit.
    `"float16"` stores kept values of every floating-point kernel (rank
    >= 2) as float16; `"int8"` stores them as int8 with one float32 scale
    per slice along the kernel's last axis (its output channels),
    `scale = max|w| / 127`. Other tensors (biases, normalization
    statistics) are never quantized. A model holding `PruneLowMagnitude`
    wrappers is saved as `strip_pruning(model)`; optimizer state is not
    saved. The file is written to a temporary file beside `path` and then
    renamed, so `path` is never left half written.

    Args:
        model: A built `keras.Model`.
        path: Where to write the file (`str` or `os.PathLike`).
        values: `"float32"`, `"float16"` or `"int8"`, how kept values of
            kernels are stored.

    Returns:
        A dict: `dense_keras_bytes` (the same weights as a `.keras` file,
        without optimizer state), `compressed_bytes`, `ratio` (dense over
        compressed), `information_bound_bytes` (see
        `information_bound_bytes`) and `bound_ratio`, and `weights`, one
        dict per tensor of Keras' weights file: its `path` there
        (`"layers/dense/vars/0"`, the layer's first variable), the `layer`
        name, encoding, stored bytes and the largest
        absolute error (`max_abs_error`) and that error relative to the
        tensor's largest magnitude (`max_rel_error`) that quantization
        introduced.

    Example:

    ```python
    info = sparsity.save_compressed(sparsity.strip_pruning(pruned), "m.zip")
    print(f"{info['ratio']:.1f}x smaller than .keras")
    model = sparsity.load_compressed("m.zip")
    ```
    """
    _check_values(values)
    path = _check_path(path)
    model = _plain_model(model)
    entries, groups, tensors = _keras_contents(model)
    encoded = [
        _encode(name, array, attrs, values) for name, array, attrs in tensors
    ]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "values": values,
        "groups": groups,
        "tensors": [meta for meta, _, _ in encoded],
    }
    blob = b"".join(payload for _, payload, _ in encoded)
    _write_atomically(path, _zip_bytes(entries, manifest, blob))

    dense = len(_dense_keras(entries, groups, tensors))
    compressed = os.path.getsize(path)
    bound = _bound_bytes([array for _, array, _ in tensors], values)
    owners = {name: attrs.get("name") for name, attrs in groups}
    return {
        "path": path,
        "values": values,
        "dense_keras_bytes": dense,
        "compressed_bytes": compressed,
        "ratio": dense / compressed,
        "information_bound_bytes": bound,
        "bound_ratio": dense / bound,
        "weights": [
            {
                "path": meta["path"],
                "layer": owners.get(meta["path"].rpartition("/")[0]),
                "shape": tuple(meta["shape"]),
                "dtype": meta["attrs"].get(
                    "dtype", np.dtype(meta["dtype"]).name
                ),
                "encoding": meta["encoding"],
                "stored_as": np.dtype(meta["values"]["dtype"]).name,
                **facts,
            }
            for meta, _, facts in encoded
        ],
    }


def load_compressed(path, *, custom_objects=None, compile=True):
    """Loads a file written by `save_compressed` as an ordinary Keras model.

    The result holds plain Keras layers and needs nothing from this library
    afterwards. A model saved compiled is compiled again, with a fresh
    optimizer. A missing file raises `FileNotFoundError`; a truncated or
    corrupt file, or one from a newer format version, raises `ValueError`
    naming the file and the problem.

    Args:
        path: A file written by `save_compressed`.
        custom_objects: Optional dict of custom classes the config refers
            to, as for `keras.saving.load_model`.
        compile: Whether to compile the model as it was saved compiled.

    Returns:
        A `keras.Model`.

    Example: `model = sparsity.load_compressed("m.zip")`
    """
    path = _check_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No compressed model at {path!r}: the file does not exist."
        )
    try:
        entries, manifest, blob = _read_zip(path)
        _check_manifest(path, manifest)
        reader = _Reader(blob)
        tensors = [
            (meta["path"], _decode(meta, reader), meta["attrs"])
            for meta in manifest["tensors"]
        ]
        reader.finish()
        dense = _dense_keras(entries, manifest["groups"], tensors)
        config = json.loads(entries["config.json"])
        compile_config = config.get("compile_config") if compile else None
    except _Unreadable:
        raise
    except (
        _Corrupt,
        AttributeError,
        EOFError,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        raise ValueError(
            f"Cannot load the compressed model {path!r}: the file is "
            f"corrupt or truncated ({_describe(error)})."
        ) from error
    with tempfile.TemporaryDirectory() as directory:
        dense_path = os.path.join(directory, "model.keras")
        with open(dense_path, "wb") as file:
            file.write(dense)
        try:
            model = keras.saving.load_model(
                dense_path, custom_objects=custom_objects, compile=False
            )
        except ValueError as error:
            raise ValueError(
                f"Cannot load the compressed model {path!r}: Keras could "
                f"not rebuild it from its config and weights. {error}"
            ) from error
    if compile_config:
        model.compile_from_config(compile_config)
    return model


def information_bound_bytes(model, values="float32"):
    """The bytes an ideal coder needs for `model`'s weights as masks + values.

    For each weight with `n` entries of which `k` are non-zero: the entropy
    of a random mask, `n * H(k / n)` bits with `H` the binary entropy, plus
    `k` kept values at their stored width (32 bits for float32 kernels, 16
    or 8 with `values="float16"` or `"int8"`, which adds a float32 scale
    per output channel). Configuration and file overhead are not counted.
    At 80% unstructured sparsity this is about 4.5x below 32-bit dense;
    `save_compressed` reaches it within a few percent. Structured masks
    (blocks, N:M) hold less information and can be coded below it.

    Args:
        model: A `keras.Model` (pruning wrappers are stripped first).
        values: `"float32"`, `"float16"` or `"int8"`, as for
            `save_compressed`.

    Returns:
        An int, the bound in bytes.

    Example: `print(sparsity.compressed.information_bound_bytes(final))`
    """
    _check_values(values)
    model = _plain_model(model)
    return _bound_bytes(
        [keras.ops.convert_to_numpy(weight) for weight in model.weights],
        values,
    )


# Input checks.


def _check_values(values):
    if not isinstance(values, str) or values not in VALUES:
        raise ValueError(
            "Argument `values` must be one of "
            f"{', '.join(repr(v) for v in VALUES)}: 'float32' keeps weights "
            "exact, 'float16' and 'int8' quantize kernels to shrink the "
            f"file further. Received: values={values!r}"
        )


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Argument `path` must be a str or os.PathLike. "
            f"Received: path={path!r} of type {type(path).__name__}"
        )
    return os.fspath(path)


def _plain_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model. Received: model of "
            f"type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "Argument `model` must be built, so that it has weights to "
            "save: call it on data or call `model.build(input_shape)`. "
            f"Received: model={model.name!r}, not built"
        )
    return strip_pruning(model) if pruning_wrappers(model) else model


# What Keras saves.


def _keras_contents(model):
    """The entries of `model`'s `.keras` file, its weight groups and tensors.

    Returns `(entries, groups, tensors)`: a dict of every zip entry but the
    weights file, `[(group_path, attrs)]` and `[(path, array, attrs)]`
    from the weights file, optimizer state left out.
    """
    with tempfile.TemporaryDirectory() as directory:
        keras_path = os.path.join(directory, "model.keras")
        model.save(keras_path)
        with zipfile.ZipFile(keras_path) as archive:
            entries = {
                name: archive.read(name)
                for name in archive.namelist()
                if name != _KERAS_WEIGHTS
            }
            weights = archive.read(_KERAS_WEIGHTS)
    groups, tensors = [], []

    def visit(name, item):
        if name.split("/")[0] == "optimizer":
            return
        attrs = {key: _json_attr(name, key, v) for key, v in item.attrs.items()}
        if isinstance(item, h5py.Dataset):
            tensors.append((name, np.asarray(item[()]), attrs))
        else:
            groups.append((name, attrs))

    with h5py.File(io.BytesIO(weights), "r") as file:
        file.visititems(visit)
    return entries, groups, tensors


def _json_attr(name, key, value):
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(
            f"Cannot compress {name!r}: its HDF5 attribute {key!r} holds a "
            f"{type(value).__name__}, not a string or number."
        )
    return value


def _dense_keras(entries, groups, tensors):
    """A `.keras` file as Keras writes it, from its parts, as bytes."""
    weights = io.BytesIO()
    with h5py.File(weights, "w") as file:
        for name, attrs in groups:
            file.require_group(name).attrs.update(attrs)
        for name, array, attrs in tensors:
            file.create_dataset(name, data=array).attrs.update(attrs)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        archive.writestr(_KERAS_WEIGHTS, weights.getvalue())
    return buffer.getvalue()


# Encoding one tensor.


def _encode(name, array, attrs, values):
    """`(manifest entry, payload bytes, report facts)` for one tensor."""
    if array.dtype.kind == "O":
        raise ValueError(
            f"Cannot compress {name!r}: it holds Python objects "
            f"(dtype {array.dtype}), not numbers."
        )
    flat = np.ascontiguousarray(array).reshape(-1)
    stored = _stored_dtype(array, values)
    all_values, scales = _quantize(name, flat, array.shape, stored)
    options = [("dense", None, flat.size, {"values": _raw(all_values)})]
    kept = _kept(flat)
    if kept is not None:
        positions = np.flatnonzero(kept)
        kept_values = _raw(all_values[positions])
        for encoding, index, mask in _mask_forms(kept, positions):
            parts = {"mask": _pack(mask), "values": kept_values}
            options.append((encoding, index, positions.size, parts))
    encoding, index, num_kept, parts = min(
        options,
        key=lambda option: sum(len(p[1]) for p in option[3].values()),
    )
    if scales is not None:
        parts["scales"] = _raw(scales)
    meta = {
        "path": name,
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "attrs": attrs,
        "encoding": encoding,
        "kept": int(num_kept),
    }
    if index is not None:
        meta["index_dtype"] = index
    for part, (codec, payload, size) in parts.items():
        meta[part] = {"codec": codec, "length": len(payload), "size": size}
    meta["values"]["dtype"] = stored.str
    payload = b"".join(payload for _, payload, _ in parts.values())
    nonzeros = flat.size if kept is None else int(np.count_nonzero(kept))
    facts = {"nonzeros": nonzeros, "stored_bytes": len(payload)}
    return meta, payload, {**facts, **_errors(flat, all_values, scales)}


def _kept(flat):
    """True where the bits are not all zero (so -0.0 is kept); None if the
    dtype has no integer view."""
    if flat.dtype.itemsize not in (1, 2, 4, 8):
        return None
    return flat.view(f"u{flat.dtype.itemsize}") != 0


def _stored_dtype(array, values):
    if values == "float32" or array.dtype.kind != "f" or array.ndim < 2:
        return array.dtype
    return _STORED[values]


def _quantize(name, flat, shape, stored):
    """The values to store for every entry, and the int8 scales or None."""
    if stored == flat.dtype:
        return flat, None
    if stored == _STORED["float16"]:
        finite = flat[np.isfinite(flat)]
        if finite.size and np.abs(finite).max() > np.finfo(np.float16).max:
            raise ValueError(
                f"Cannot store {name!r} as float16: it holds values beyond "
                "float16's range (65504). Use values='int8' or 'float32'."
            )
        return flat.astype(stored), None
    if not np.all(np.isfinite(flat)):
        raise ValueError(
            f"Cannot store {name!r} as int8: it holds NaN or infinite "
            "values. Use values='float32'."
        )
    columns = flat.reshape(-1, shape[-1]).astype(np.float32)
    scales = np.abs(columns).max(axis=0) / np.float32(127)
    safe = np.where(scales > 0, scales, np.float32(1))
    quantized = np.clip(np.round(columns / safe), -127, 127).astype(stored)
    return quantized.reshape(-1), scales.astype("<f4")


def _dequantize(stored_values, positions, scales, dtype):
    """Kept values back in `dtype`; with int8 `scales`, per last-axis slice
    (the slice of flat position `p` is `p % len(scales)`)."""
    if scales is None:
        return stored_values.astype(dtype)
    channels = positions % scales.size
    return (stored_values.astype(np.float32) * scales[channels]).astype(dtype)


def _errors(flat, stored_values, scales):
    """The largest error quantization makes, absolute and relative to the
    tensor's largest magnitude."""
    if stored_values.dtype == flat.dtype or not flat.size:
        return {"max_abs_error": 0.0, "max_rel_error": 0.0}
    restored = _dequantize(
        stored_values, np.arange(flat.size), scales, flat.dtype
    )
    error = np.abs(restored.astype(np.float64) - flat.astype(np.float64))
    largest = float(np.abs(flat).max())
    max_abs = float(error.max())
    return {
        "max_abs_error": max_abs,
        "max_rel_error": max_abs / largest if largest else 0.0,
    }


def _mask_forms(kept, positions):
    """Yields `(encoding, index dtype or None, raw mask bytes)` candidates.

    Indices are stored as differences (the first from 0), never wider than
    absolute positions, in the narrower of uint16 and uint32 that fits.
    """
    yield "bitmask", None, np.packbits(kept).tobytes()
    yield "runs", None, _runs(positions).tobytes()
    steps = np.diff(positions, prepend=0)
    largest = int(steps.max()) if steps.size else 0
    dtype = next(d for d in _INDEX_DTYPES if largest <= np.iinfo(d).max)
    yield "indices", dtype.str, steps.astype(dtype).tobytes()


def _runs(positions):
    gaps = np.diff(positions, prepend=-1) - 1
    whole, rest = np.divmod(gaps, 255)
    runs = np.full(positions.size + int(whole.sum()), 255, np.uint8)
    runs[np.cumsum(whole + 1) - 1] = rest
    return runs


def _raw(array):
    """`(codec, payload, raw size)` for values, which are stored raw."""
    raw = array.tobytes()
    return "raw", raw, len(raw)


def _pack(raw):
    """`(codec, payload, raw size)`: a mask's bytes raw or as raw DEFLATE,
    whichever is smaller.

    Huffman-only DEFLATE codes the skewed bytes of masks and run lengths
    close to their entropy; the default strategy wins on repeated patterns.
    """
    best = ("raw", raw)
    for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_HUFFMAN_ONLY):
        encoder = zlib.compressobj(9, zlib.DEFLATED, -15, 9, strategy)
        payload = encoder.compress(raw) + encoder.flush()
        if len(payload) < len(best[1]):
            best = ("deflate", payload)
    return best + (len(raw),)


def _bound_bytes(arrays, values):
    bits = 0.0
    for array in arrays:
        flat = np.ascontiguousarray(array).reshape(-1)
        kept = _kept(flat)
        n = flat.size
        k = n if kept is None else int(kept.sum())
        stored = _stored_dtype(array, values)
        bits += n * _binary_entropy(k / n) if n else 0.0
        bits += k * stored.itemsize * 8
        if stored == _STORED["int8"]:
            bits += array.shape[-1] * 32
    return math.ceil(bits / 8)


def _binary_entropy(p):
    if p in (0.0, 1.0):
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


# The file.


def _zip_bytes(entries, manifest, blob):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_MANIFEST, json.dumps(manifest))
        for name, data in entries.items():
            archive.writestr(name, data)
        archive.writestr(_BLOB, blob, compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


def _write_atomically(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class _Corrupt(Exception):
    """A problem found while decoding a file, reported as a ValueError."""


class _Unreadable(ValueError):
    """A well-formed file that is not one this version can read."""


def _describe(error):
    if isinstance(error, KeyError):
        return f"missing manifest field {error}"
    return str(error) or type(error).__name__


def _read_zip(path):
    if not zipfile.is_zipfile(path):
        raise _Corrupt("not a zip file")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if _MANIFEST not in names:
            raise _Unreadable(
                f"{path!r} is not a keras_sparsity compressed model: it "
                f"has no {_MANIFEST} manifest (a .keras file loads with "
                "keras.saving.load_model)."
            )
        for name in ("config.json", _BLOB):
            if name not in names:
                raise _Corrupt(f"no {name} entry")
        manifest = json.loads(archive.read(_MANIFEST))
        blob = archive.read(_BLOB)
        entries = {
            name: archive.read(name)
            for name in names
            if name not in (_MANIFEST, _BLOB)
        }
    if not isinstance(manifest, dict):
        raise _Corrupt(f"{_MANIFEST} is not a JSON object")
    return entries, manifest, blob


def _check_manifest(path, manifest):
    if manifest.get("format") != FORMAT:
        raise _Unreadable(
            f"{path!r} is not a keras_sparsity compressed model: its "
            f"manifest names format {manifest.get('format')!r}, not "
            f"{FORMAT!r}."
        )
    version = manifest.get("version")
    if not isinstance(version, int) or version < 1:
        raise _Corrupt(f"invalid format version {version!r}")
    if version > VERSION:
        raise _Unreadable(
            f"{path!r} was written by a newer keras-sparsity (format "
            f"version {version}); this version reads format version "
            f"{VERSION} only. Upgrade keras-sparsity to load it."
        )


class _Reader:
    """Reads the parts of `weights.bin` in order, checking their sizes."""

    def __init__(self, blob):
        self.blob = blob
        self.offset = 0

    def read(self, part, size=None):
        codec, length, raw_size = part["codec"], part["length"], part["size"]
        if codec not in _CODECS:
            raise _Corrupt(f"unknown codec {codec!r}")
        if not all(isinstance(n, int) and n >= 0 for n in (length, raw_size)):
            raise _Corrupt(f"invalid part sizes {length!r}, {raw_size!r}")
        if size is not None and raw_size != size:
            raise _Corrupt(f"a part holds {raw_size} bytes, expected {size}")
        payload = self.blob[self.offset : self.offset + length]
        if len(payload) != length:
            raise _Corrupt(f"{_BLOB} ends before the parts it lists")
        self.offset += length
        if codec == "raw":
            data = payload
        else:
            decoder = zlib.decompressobj(-15)
            data = decoder.decompress(payload, raw_size + 1)
            if not decoder.eof or decoder.unused_data:
                raise _Corrupt("a DEFLATE part does not end where listed")
        if len(data) != raw_size:
            raise _Corrupt(
                f"a part decodes to {len(data)} bytes, not {raw_size}"
            )
        return data

    def finish(self):
        if self.offset != len(self.blob):
            raise _Corrupt(
                f"{_BLOB} holds {len(self.blob)} bytes, the manifest lists "
                f"{self.offset}"
            )


def _decode(meta, reader):
    shape = tuple(meta["shape"])
    dtype = np.dtype(meta["dtype"])
    stored = np.dtype(meta["values"]["dtype"])
    if stored != dtype and (
        dtype.kind != "f" or len(shape) < 2 or stored not in _STORED.values()
    ):
        raise _Corrupt(f"{meta['path']}: {dtype} cannot be stored as {stored}")
    if (stored == _STORED["int8"] and dtype != stored) != ("scales" in meta):
        raise _Corrupt(f"{meta['path']}: int8 values need their scales")
    n = math.prod(shape)
    encoding, k = meta["encoding"], meta["kept"]
    if encoding == "dense":
        positions = np.arange(n)
    elif encoding in ("bitmask", "runs", "indices"):
        mask_size = (n + 7) // 8 if encoding == "bitmask" else None
        raw = reader.read(meta["mask"], mask_size)
        positions = _positions(encoding, raw, n, meta.get("index_dtype"))
    else:
        raise _Corrupt(f"unknown encoding {encoding!r}")
    if positions.size != k:
        raise _Corrupt(f"{meta['path']}: mask keeps {positions.size}, not {k}")
    raw = reader.read(meta["values"], k * stored.itemsize)
    kept = np.frombuffer(raw, stored)
    scales = None
    if "scales" in meta:
        scales = np.frombuffer(
            reader.read(meta["scales"], shape[-1] * 4), "<f4"
        )
    flat = np.zeros(n, dtype)
    flat[positions] = _dequantize(kept, positions, scales, dtype)
    return flat.reshape(shape)


def _positions(encoding, raw, n, index):
    if encoding == "bitmask":
        bits = np.unpackbits(np.frombuffer(raw, np.uint8))
        if bits[n:].any():
            raise _Corrupt("bitmask padding is not zero")
        return np.flatnonzero(bits[:n])
    if encoding == "runs":
        runs = np.frombuffer(raw, np.uint8)
        if runs.size and runs[-1] == 255:
            raise _Corrupt("run lengths end inside a run")
        ends = runs < 255
        positions = np.cumsum(runs, dtype=np.int64)[ends] + np.arange(
            ends.sum()
        )
    else:
        if index not in [dtype.str for dtype in _INDEX_DTYPES]:
            raise _Corrupt(f"invalid index dtype {index!r}")
        steps = np.frombuffer(raw, np.dtype(index)).astype(np.int64)
        if steps.size > 1 and not steps[1:].all():
            raise _Corrupt("indices repeat")
        positions = np.cumsum(steps)
    if positions.size and positions[-1] >= n:
        raise _Corrupt("a kept position lies past the end of its tensor")
    return positions
