"""Compressed saving: sparse weights as entropy-coded masks plus kept values.

The file is a zip holding what Keras writes to a `.keras` file (its
`config.json`, `metadata.json` and any assets, copied as they are) plus
`weights.bin` and a JSON manifest, `compressed.json`, in place of
`model.weights.h5`. Each tensor of the weights file is coded on its own
by `keras_sparsity.coding` (as all values, a bitmask, zero runs or
indices, whichever is smallest, plus the kept values) and its bytes are
appended to `weights.bin`; its manifest entry says how. Tensors are named
by their path in Keras' weights file (`"layers/dense/vars/0"`) and are
loaded back by Keras itself, so they are matched to variables as Keras
matches them, by the model's object structure (`variable.path` is not
stable: a model rebuilt from its config names its variables differently).
Optimizer state is not stored.
"""

import io
import json
import os
import tempfile
import zipfile
import zlib

import h5py
import keras
import numpy as np

from keras_sparsity import coding
from keras_sparsity import files
from keras_sparsity.checks import check_built_model
from keras_sparsity.checks import check_flag
from keras_sparsity.checks import check_output_path
from keras_sparsity.checks import check_path

# `compressed.VALUES` stays public: the accepted `values`.
from keras_sparsity.coding import VALUES  # noqa: F401
from keras_sparsity.strip import strip_pruning
from keras_sparsity.walk import pruning_wrappers

FORMAT = "keras_sparsity.compressed"
# 1: -0.0 was kept as a value. 2: zero by value, with the sign bits of the
# zeros (`signs`) in tensors that hold -0.0. Version 1 files still load.
VERSION = 2

_MANIFEST = "compressed.json"
_BLOB = "weights.bin"
_KERAS_WEIGHTS = "model.weights.h5"
# Limits on what a file may declare, checked before anything is read.
_MAX_ENTRIES = 100_000
_MAX_JSON_BYTES = 64 << 20  # The manifest and config.json, each.
# DEFLATE decodes to at most 1032 times its length (`coding`).
_DEFLATE_RATIO = 1032


def save_compressed(model, path, values="float32"):
    """Saves a model with its sparse weights compressed, near their entropy.

    Pruned weights cost the entropy of their mask (about 0.72 bits per
    weight at 80% sparsity) instead of 32 bits, and kept values their
    stored width. Zero is by value: -0.0 (what `w * mask` leaves for a
    negative weight) is pruned too, and costs one more bit per zero, its
    sign, only in a weight that holds some -0.0 and is stored exactly.
    With `values="float32"` the weights load back bit for bit.
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
        `information_bound_bytes`) and `bound_ratio` (None when the bound
        is 0: all weights zero), and `weights`, one
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
    coding.check_values(values)
    path = check_output_path(path)
    model = _plain_model(model)
    entries, groups, tensors = _keras_contents(model)
    encoded = []
    for name, array, attrs in tensors:
        meta, payload, facts = coding.encode(name, array, values)
        encoded.append(({"path": name, "attrs": attrs, **meta}, payload, facts))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "values": values,
        "groups": groups,
        "tensors": [meta for meta, _, _ in encoded],
    }
    blob = b"".join(payload for _, payload, _ in encoded)
    data = _zip_bytes(entries, manifest, blob)
    with files.replacing(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(data)

    dense = len(_dense_keras(entries, groups, tensors))
    compressed = os.path.getsize(path)
    bound = coding.bound_bytes([array for _, array, _ in tensors], values)
    owners = {name: attrs.get("name") for name, attrs in groups}
    return {
        "path": path,
        "values": values,
        "dense_keras_bytes": dense,
        "compressed_bytes": compressed,
        "ratio": dense / compressed,
        "information_bound_bytes": bound,
        "bound_ratio": dense / bound if bound else None,  # all zero
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


def load_compressed(
    path, *, custom_objects=None, compile=True, safe_mode=True, max_bytes=None
):
    """Loads a file written by `save_compressed` as an ordinary Keras model.

    The result holds plain Keras layers and needs nothing from this library
    afterwards. A model saved compiled is compiled again, with a fresh
    optimizer. A missing file raises `FileNotFoundError`. Any other file
    that cannot be loaded raises `ValueError` naming the file and the
    problem: not a compressed model, a newer format version, a truncated,
    corrupt or crafted file, or a config Keras cannot rebuild. Reading a
    file runs no code from it (no pickle; `Lambda` layers are refused
    unless `safe_mode=False`), and every count and size the file declares
    is checked against the file itself and against `max_bytes` before
    memory is allocated for it.

    Args:
        path: A file written by `save_compressed`.
        custom_objects: Optional dict of custom classes the config refers
            to, as for `keras.saving.load_model`.
        compile: Whether to compile the model as it was saved compiled.
        safe_mode: As for `keras.saving.load_model`: False allows `Lambda`
            layers to be rebuilt from their bytecode, only for files you
            trust.
        max_bytes: The most bytes the file's weights and entries may decode
            to, each. Default: a quarter of this machine's memory (loading
            holds about four copies of the weights).

    Returns:
        A `keras.Model`.

    Example: `model = sparsity.load_compressed("m.zip")`
    """
    path = check_path(path)
    max_bytes = _check_max_bytes(max_bytes)
    check_flag("compile", compile)
    check_flag("safe_mode", safe_mode)
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(
            "Argument `custom_objects` must be None or a dict from class "
            f"name to class. Received: custom_objects={custom_objects!r}"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No compressed model at {path!r}: the file does not exist."
        )
    try:
        entries, manifest, blob = _read_zip(path, max_bytes)
        _check_manifest(path, manifest)
        _check_tensors(manifest["tensors"], len(blob), max_bytes)
        tensors = _decode_tensors(manifest["tensors"], blob)
        dense = _dense_keras(entries, manifest["groups"], tensors)
        config = json.loads(entries["config.json"])
        if not isinstance(config, dict):
            raise coding.CorruptError("config.json is not a JSON object")
        compile_config = config.get("compile_config") if compile else None
    except _Unreadable:
        raise
    except _CORRUPT as error:
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
                dense_path,
                custom_objects=custom_objects,
                compile=False,
                safe_mode=safe_mode,
            )
            if compile_config:
                model.compile_from_config(compile_config)
        except _KERAS_ERRORS as error:
            # A TypeError (a class the config names is unknown) stays one.
            kind = (
                _RebuildTypeError
                if isinstance(error, TypeError)
                else ValueError
            )
            raise kind(
                f"Cannot load the compressed model {path!r}: Keras could "
                f"not rebuild it from its config and weights. {error}"
            ) from error
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
    coding.check_values(values)
    model = _plain_model(model)
    return coding.bound_bytes(
        [keras.ops.convert_to_numpy(weight) for weight in model.weights],
        values,
    )


# Input checks.


def _check_max_bytes(max_bytes):
    if max_bytes is None:
        return _memory_bytes() // 4
    if type(max_bytes) is not int or max_bytes < 1:
        raise ValueError(
            "Argument `max_bytes` must be a positive int, the most bytes a "
            "file's weights may decode to, or None for a quarter of this "
            f"machine's memory. Received: max_bytes={max_bytes!r}"
        )
    return max_bytes


def _memory_bytes():
    """This machine's physical memory, or 1 TiB where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 1 << 40


def _plain_model(model):
    check_built_model(model, "save")
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


# The file.


def _zip_bytes(entries, manifest, blob):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_MANIFEST, json.dumps(manifest))
        for name, data in entries.items():
            archive.writestr(name, data)
        archive.writestr(_BLOB, blob, compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


class _Unreadable(ValueError):
    """A well-formed file that is not one this version can read."""


# What reading a corrupt or crafted file can raise before Keras sees it.
_CORRUPT = (
    coding.CorruptError,
    AttributeError,
    EOFError,
    IndexError,
    KeyError,
    NotImplementedError,  # zipfile: an unsupported zip feature.
    OverflowError,
    RecursionError,  # JSON nested too deep.
    RuntimeError,  # h5py: a name HDF5 cannot hold.
    TypeError,
    ValueError,
    zipfile.BadZipFile,
    zlib.error,
)


class _RebuildTypeError(ValueError, TypeError):
    """Keras' `TypeError` for a config it cannot rebuild (as a class it
    does not know), still a `ValueError` as every unreadable file is."""


# What Keras raises for a config it cannot rebuild (safe mode included).
_KERAS_ERRORS = (
    AttributeError,
    IndexError,
    KeyError,
    RecursionError,
    TypeError,
    ValueError,
)


def _describe(error):
    if isinstance(error, KeyError):
        return f"missing manifest field {error}"
    return str(error) or type(error).__name__


def _read_zip(path, max_bytes):
    if not zipfile.is_zipfile(path):
        raise coding.CorruptError("not a zip file")
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if _MANIFEST not in names:
            raise _Unreadable(
                f"{path!r} is not a keras_sparsity compressed model: it "
                f"has no {_MANIFEST} manifest (a .keras file loads with "
                "keras.saving.load_model)."
            )
        _check_entries(infos, os.path.getsize(path), max_bytes)
        manifest = json.loads(archive.read(_MANIFEST))
        blob = archive.read(_BLOB)
        entries = {
            name: archive.read(name)
            for name in names
            if name not in (_MANIFEST, _BLOB)
        }
    if not isinstance(manifest, dict):
        raise coding.CorruptError(f"{_MANIFEST} is not a JSON object")
    return entries, manifest, blob


def _check_entries(infos, file_bytes, max_bytes):
    """Checks the zip's entries before any is read: each named once, the
    ones a compressed model needs present, each inside the file, and each
    entry's declared size one its stored bytes can hold, within the
    limits."""
    names = [info.filename for info in infos]
    if len(names) > _MAX_ENTRIES or len(set(names)) != len(names):
        raise coding.CorruptError(
            f"{len(names)} zip entries, {len(set(names))} names"
        )
    for name in ("config.json", _BLOB):
        if name not in names:
            raise coding.CorruptError(f"no {name} entry")
    if _KERAS_WEIGHTS in names:
        raise coding.CorruptError(f"a {_KERAS_WEIGHTS} entry beside {_BLOB}")
    for info in infos:
        end = info.header_offset + info.compress_size
        if info.header_offset < 0 or end > file_bytes:
            raise coding.CorruptError(
                f"entry {info.filename!r} lies outside the file"
            )
        if info.compress_type == zipfile.ZIP_STORED:
            largest = info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            largest = _DEFLATE_RATIO * (info.compress_size + 1)
        else:
            raise coding.CorruptError(
                f"entry {info.filename!r} uses compression method "
                f"{info.compress_type}, not stored or DEFLATE"
            )
        limit = (
            _MAX_JSON_BYTES if info.filename.endswith(".json") else max_bytes
        )
        if info.file_size > min(largest, limit):
            raise coding.CorruptError(
                f"entry {info.filename!r} declares {info.file_size} bytes, "
                f"more than its {info.compress_size} stored bytes can hold "
                f"or than the limit of {limit} bytes"
            )


def _check_manifest(path, manifest):
    if manifest.get("format") != FORMAT:
        raise _Unreadable(
            f"{path!r} is not a keras_sparsity compressed model: its "
            f"manifest names format {manifest.get('format')!r}, not "
            f"{FORMAT!r}."
        )
    version = manifest.get("version")
    if not isinstance(version, int) or version < 1:
        raise coding.CorruptError(f"invalid format version {version!r}")
    if version > VERSION:
        raise _Unreadable(
            f"{path!r} was written by a newer keras-sparsity (format "
            f"version {version}); this version reads format versions up "
            f"to {VERSION}. Upgrade keras-sparsity to load it."
        )
    groups, metas = manifest.get("groups"), manifest.get("tensors")
    if not isinstance(groups, list) or not isinstance(metas, list):
        raise coding.CorruptError("the manifest lists no groups or tensors")
    for group in groups:
        if not (
            isinstance(group, list)
            and len(group) == 2
            and isinstance(group[0], str)
            and _is_attrs(group[1])
        ):
            raise coding.CorruptError(f"invalid weight group {group!r:.80}")
    for meta in metas:
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("path"), str)
            and _is_attrs(meta.get("attrs"))
        ):
            raise coding.CorruptError(f"invalid tensor entry {meta!r:.80}")


def _is_attrs(attrs):
    """Whether `attrs` is what `_json_attr` writes: names to scalars."""
    return isinstance(attrs, dict) and all(
        key and "\0" not in key and isinstance(value, (str, int, float, bool))
        for key, value in attrs.items()
    )


def _check_tensors(metas, blob_bytes, max_bytes):
    """Checks every tensor's entry against the blob's size and `max_bytes`
    before any is decoded."""
    total, stored = 0, 0
    for meta in metas:
        total += coding.decoded_bytes(meta["path"], meta)
        stored += coding.stored_length(meta)
    if stored != blob_bytes:
        raise coding.CorruptError(
            f"{_BLOB} holds {blob_bytes} bytes, the manifest lists {stored}"
        )
    if total > max_bytes:
        raise coding.CorruptError(
            f"its weights declare {total} bytes, more than the limit of "
            f"{max_bytes} bytes (argument `max_bytes`)"
        )


def _decode_tensors(metas, blob):
    """`[(path, array, attrs)]` from the manifest's entries and the blob,
    which must hold their payloads back to back and nothing else."""
    tensors, offset = [], 0
    for meta in metas:
        length = coding.stored_length(meta)
        payload = blob[offset : offset + length]
        if len(payload) != length:
            raise coding.CorruptError(f"{_BLOB} ends before the parts it lists")
        offset += length
        array = coding.decode(meta["path"], meta, payload)
        tensors.append((meta["path"], array, meta["attrs"]))
    if offset != len(blob):
        raise coding.CorruptError(
            f"{_BLOB} holds {len(blob)} bytes, the manifest lists {offset}"
        )
    return tensors
