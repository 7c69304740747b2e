"""Per-tensor coding of sparse weights: masks, kept values, quantization.

`encode` stores one array in the smallest of these forms, measured per
tensor:

* `"dense"`: all values;
* `"bitmask"`: a packed bitmask of the kept (non-zero) positions;
* `"runs"`: per kept value, the count of zeros before it as a byte
  (255 means "255 zeros, go on"), which at 80% sparsity codes the mask
  within about 2% of its entropy;
* `"indices"`: the sorted flat positions of the kept values, as uint16 or
  uint32, as differences;

plus the kept values, raw: as they are (`values="float32"`), or for
floating-point kernels (rank >= 2) as float16 or as int8 with one float32
scale per output channel. A mask is stored raw or DEFLATE-coded,
whichever is smaller. Zero means zero by value: a floating-point -0.0 (what
`w * mask` leaves for a negative pruned weight) is not kept. So that values
stored exactly still decode bit for bit, a tensor holding any -0.0 also
stores the sign bits of its zeros, in flat order (one bit per zero, packed,
raw or DEFLATE-coded); quantized kernels decode their zeros as +0.0.
`decode` reverses `encode`; `bound_bytes` is what an ideal coder of masks
and values would need. The file that holds the coded tensors is
`keras_sparsity.compressed`.

Example:

```python
meta, payload, facts = coding.encode("kernel", kernel, "float32")
restored = coding.decode("kernel", meta, payload)
```
"""

import math
import zlib

import numpy as np

VALUES = ("float32", "float16", "int8")

_CODECS = ("raw", "deflate")
_ENCODINGS = ("dense", "bitmask", "runs", "indices")
_PARTS = ("mask", "values", "scales", "signs")
_STORED = {"float16": np.dtype("<f2"), "int8": np.dtype("i1")}
_INDEX_DTYPES = (np.dtype("<u2"), np.dtype("<u4"))
# DEFLATE codes at most 258 bytes in 2 bits, so no stream decodes to more
# than 1032 times its length (plus the end of a block).
_DEFLATE_RATIO = 1032
# NumPy's limit on the number of axes.
_MAX_RANK = 64


class CorruptError(Exception):
    """Coded data that does not decode: bad sizes, codes or positions.

    Readers of a file report it as a `ValueError` naming the file.
    """


def check_values(values):
    """Raises `ValueError` unless `values` is one of `VALUES`.

    Example: `coding.check_values("int8")`
    """
    if not isinstance(values, str) or values not in VALUES:
        raise ValueError(
            "Argument `values` must be one of "
            f"{', '.join(repr(v) for v in VALUES)}: 'float32' keeps weights "
            "exact, 'float16' and 'int8' quantize kernels to shrink the "
            f"file further. Received: values={values!r}"
        )


# Encoding one tensor.


def encode(name, array, values):
    """Codes one array in its smallest form.

    Args:
        name: The tensor's name, for error messages.
        array: A NumPy array.
        values: One of `VALUES`, how kept values of floating-point
            kernels (rank >= 2) are stored.

    Returns:
        `(meta, payload, facts)`: `meta` a JSON-ready dict (`shape`,
        `dtype`, `encoding`, `kept`, `index_dtype` for indices, and per
        stored part, `mask`, `values`, `scales` for int8 and `signs` for
        zeros of which some are -0.0, its `codec`,
        `length` in the payload and decoded `size`; `values` also has the
        stored `dtype`), `payload` the parts' bytes in that order, and
        `facts` for a report: `nonzeros`, `stored_bytes`, and the largest
        error quantization made, `max_abs_error` and `max_rel_error`
        (relative to the largest magnitude).

    Example: `meta, payload, facts = coding.encode("k", kernel, "int8")`
    """
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
    signs = None
    if kept is not None:
        positions = np.flatnonzero(kept)
        kept_values = _raw(all_values[positions])
        if stored == flat.dtype:  # Exact values: keep -0.0 bit for bit.
            negative = _negative_zeros(flat, kept)
            if negative is not None and negative.any():
                signs = _pack(np.packbits(negative).tobytes())
        for encoding, index, mask in _mask_forms(kept, positions):
            parts = {"mask": _pack(mask), "values": kept_values}
            if signs is not None:
                parts["signs"] = signs
            options.append((encoding, index, positions.size, parts))
    encoding, index, num_kept, parts = min(
        options,
        key=lambda option: sum(len(p[1]) for p in option[3].values()),
    )
    if scales is not None:  # Never with signs: those need exact values.
        parts["scales"] = _raw(scales)
    meta = {
        "shape": list(array.shape),
        "dtype": array.dtype.str,
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


def _is_float(dtype):
    """NumPy's IEEE floats (as HDF5 stores them), whose sign is the top bit.

    Others (ml_dtypes' bfloat16, of kind "V") are compared by their bits.
    """
    return dtype.kind == "f"


def _kept(flat):
    """True where the value is not zero (so +0.0 and -0.0 are not kept, NaN
    is); None if the dtype has no integer view. Other dtypes compare bits."""
    if flat.dtype.itemsize not in (1, 2, 4, 8):
        return None
    if _is_float(flat.dtype):
        return flat != 0
    return flat.view(f"u{flat.dtype.itemsize}") != 0


def _negative_zeros(flat, kept):
    """Per entry not kept, in flat order, whether it is -0.0; None unless
    floating point."""
    if not _is_float(flat.dtype):
        return None
    bits = 8 * flat.dtype.itemsize
    zeros = flat[~kept].view(f"u{flat.dtype.itemsize}")
    return (zeros >> (bits - 1)).astype(bool)


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


# The information bound.


def bound_bytes(arrays, values):
    """The bytes an ideal coder needs for `arrays` as masks plus values.

    Per array of `n` entries, `k` of them non-zero: `n * H(k / n)` bits
    (`H` the binary entropy) plus `k` values at their stored width for
    `values`, plus a float32 scale per output channel with `"int8"`. When
    values are stored exactly and `z` of the `n - k` zeros are -0.0, their
    signs add `(n - k) * H(z / (n - k))` bits (none when all are +0.0).

    Example: `coding.bound_bytes([kernel, bias], "float32")`
    """
    bits = 0.0
    for array in arrays:
        flat = np.ascontiguousarray(array).reshape(-1)
        kept = _kept(flat)
        n = flat.size
        k = n if kept is None else int(kept.sum())
        stored = _stored_dtype(array, values)
        bits += n * _binary_entropy(k / n) if n else 0.0
        if kept is not None and stored == flat.dtype and k < n:
            negative = _negative_zeros(flat, kept)
            if negative is not None:
                bits += (n - k) * _binary_entropy(negative.mean())
        bits += k * stored.itemsize * 8
        if stored == _STORED["int8"]:
            bits += array.shape[-1] * 32
    return math.ceil(bits / 8)


def _binary_entropy(p):
    if p in (0.0, 1.0):
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


# Decoding one tensor.


def stored_length(meta):
    """The bytes of payload that `encode` wrote for `meta`.

    Raises `CorruptError` for part lengths and sizes that are not
    non-negative integers.

    Example: `assert coding.stored_length(meta) == len(payload)`
    """
    length = 0
    for part in _PARTS:
        if part in meta:
            length += _part_sizes(meta[part])[0]
    return length


def _part_sizes(part):
    if not isinstance(part, dict):
        raise CorruptError(f"a part is {type(part).__name__}, not an object")
    sizes = (part.get("length"), part.get("size"))
    if not all(_is_count(n) for n in sizes):
        raise CorruptError(f"invalid part sizes {sizes}")
    return sizes


def _is_count(value):
    return type(value) is int and value >= 0


def decoded_bytes(name, meta):
    """The bytes of the array `meta` declares, checked before decoding.

    Checks every field `decode` reads against the others and against what
    its parts can hold, so that a crafted `meta` is rejected before any
    memory is allocated for it: a valid shape and numeric dtype, a kept
    count within the size, each part's decoded size the one its encoding
    implies and no larger than its stored length can decode to (at most
    1032 times it for DEFLATE). Raises `CorruptError` naming `name`, or
    `KeyError` for a missing field.

    Example: `total = sum(coding.decoded_bytes(m["path"], m) for m in metas)`
    """
    if not isinstance(meta, dict):
        raise CorruptError(f"{name}: its entry is not an object")
    shape, dtype, stored = _checked_types(name, meta)
    n = math.prod(shape)
    k, encoding = meta["kept"], meta["encoding"]
    if encoding not in _ENCODINGS:
        raise CorruptError(f"{name}: unknown encoding {encoding!r}")
    if not _is_count(k) or k > n:
        raise CorruptError(f"{name}: {k!r} kept of {n} values")
    if encoding == "dense" and k != n:
        raise CorruptError(f"{name}: mask keeps {n}, not {k}")
    # The range of each part's decoded size. `decode` checks values and
    # indices against the count of kept positions the mask decodes to.
    expected = {"values": (0, n * stored.itemsize)}
    if encoding == "bitmask":
        expected["mask"] = ((n + 7) // 8,) * 2
    elif encoding == "indices":
        index = meta.get("index_dtype")
        if index not in [d.str for d in _INDEX_DTYPES]:
            raise CorruptError(f"{name}: invalid index dtype {index!r}")
        expected["mask"] = (0, n * np.dtype(index).itemsize)
    elif encoding == "runs":  # k bytes plus one per 255 zeros skipped.
        expected["mask"] = (k, k + (n - k) // 255 + 1)
    if "scales" in meta:
        expected["scales"] = (shape[-1] * 4,) * 2
    if "signs" in meta:
        expected["signs"] = ((n - k + 7) // 8,) * 2
    for part in _PARTS:
        if (part in meta) != (part in expected):
            raise CorruptError(f"{name}: part {part!r} is not expected")
        if part not in meta:
            continue
        length, size = _part_sizes(meta[part])
        codec = meta[part].get("codec")
        if codec not in _CODECS:
            raise CorruptError(f"{name}: unknown codec {codec!r}")
        limit = length if codec == "raw" else _DEFLATE_RATIO * (length + 1)
        low, high = expected[part]
        if not low <= size <= min(high, limit):
            raise CorruptError(
                f"{name}: its {part} part lists {size} bytes, which its "
                f"{length} stored bytes cannot hold or its shape does not "
                "imply"
            )
    return n * dtype.itemsize


def _checked_types(name, meta):
    """`(shape, dtype, stored dtype)` of `meta`, each checked."""
    shape = meta["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_RANK
        or not all(_is_count(d) for d in shape)
    ):
        raise CorruptError(f"{name}: invalid shape {shape!r}")
    dtype = _numeric_dtype(name, meta["dtype"])
    values = meta["values"]
    if not isinstance(values, dict):
        raise CorruptError(f"{name}: no values part")
    stored = _numeric_dtype(name, values["dtype"])
    if stored != dtype and (
        dtype.kind != "f" or len(shape) < 2 or stored not in _STORED.values()
    ):
        raise CorruptError(f"{name}: {dtype} cannot be stored as {stored}")
    if (stored == _STORED["int8"] and dtype != stored) != ("scales" in meta):
        raise CorruptError(f"{name}: int8 values need their scales")
    dense = meta["encoding"] == "dense"
    if "signs" in meta and (not _is_float(dtype) or stored != dtype or dense):
        raise CorruptError(f"{name}: sign bits of zeros stored for {dtype}")
    return tuple(shape), dtype, stored


def _numeric_dtype(name, text):
    """The NumPy dtype `text` names if it is a plain array dtype: numbers,
    raw bytes (bfloat16 in HDF5) or strings, no objects or records."""
    try:
        dtype = np.dtype(text) if _is_short_str(text) else None
    except (TypeError, ValueError):
        dtype = None
    if (
        dtype is None
        or dtype.kind not in "biufcVSU"
        or dtype.itemsize < 1
        or dtype.fields is not None
        or dtype.subdtype is not None
    ):
        raise CorruptError(f"{name}: invalid dtype {text!r}")
    return dtype


def _is_short_str(text):
    return isinstance(text, str) and len(text) <= 16


def decode(name, meta, payload):
    """The array that `encode` coded as `meta` and `payload`.

    Args:
        name: The tensor's name, for error messages.
        meta: The dict `encode` returned.
        payload: The bytes `encode` returned.

    Raises `CorruptError` where `meta` and `payload` disagree.

    Example: `array = coding.decode("kernel", meta, payload)`
    """
    decoded_bytes(name, meta)
    length = stored_length(meta)
    if len(payload) != length:
        raise CorruptError(
            f"{name}: {len(payload)} bytes stored, the parts list {length}"
        )
    parts = _Parts(payload)
    shape, dtype, stored = _checked_types(name, meta)
    n = math.prod(shape)
    encoding, k = meta["encoding"], meta["kept"]
    if encoding == "dense":
        positions = np.arange(n)
    else:
        mask_size = (n + 7) // 8 if encoding == "bitmask" else None
        raw = parts.read(meta["mask"], mask_size)
        positions = _positions(encoding, raw, n, meta.get("index_dtype"))
    if positions.size != k:
        raise CorruptError(f"{name}: mask keeps {positions.size}, not {k}")
    raw = parts.read(meta["values"], k * stored.itemsize)
    kept = np.frombuffer(raw, stored)
    scales = None
    if "scales" in meta:
        raw_scales = parts.read(meta["scales"], shape[-1] * 4)
        scales = np.frombuffer(raw_scales, "<f4")
    flat = np.zeros(n, dtype)
    flat[positions] = _dequantize(kept, positions, scales, dtype)
    if "signs" in meta:
        _restore_negative_zeros(
            flat, positions, parts.read(meta["signs"], (n - k + 7) // 8)
        )
    return flat.reshape(shape)


def _restore_negative_zeros(flat, positions, raw):
    """Sets to -0.0 the zeros of `flat` (the entries not at `positions`)
    whose bit in `raw`, packed in flat order, is set."""
    zeros = np.ones(flat.size, bool)
    zeros[positions] = False
    zeros = np.flatnonzero(zeros)
    bits = np.unpackbits(np.frombuffer(raw, np.uint8))
    if bits[zeros.size :].any():
        raise CorruptError("sign bit padding is not zero")
    negative_zero = np.array(-0.0, np.float32).astype(flat.dtype)
    flat[zeros[bits[: zeros.size].astype(bool)]] = negative_zero


class _Parts:
    """Reads a tensor's parts from its payload in order, checking sizes."""

    def __init__(self, payload):
        self.payload = payload
        self.offset = 0

    def read(self, part, size):
        codec, length, raw_size = part["codec"], part["length"], part["size"]
        if codec not in _CODECS:
            raise CorruptError(f"unknown codec {codec!r}")
        if size is not None and raw_size != size:
            raise CorruptError(
                f"a part holds {raw_size} bytes, expected {size}"
            )
        payload = self.payload[self.offset : self.offset + length]
        self.offset += length
        if codec == "raw":
            data = payload
        else:
            decoder = zlib.decompressobj(-15)
            data = decoder.decompress(payload, raw_size + 1)
            if not decoder.eof or decoder.unused_data:
                raise CorruptError("a DEFLATE part does not end where listed")
        if len(data) != raw_size:
            raise CorruptError(
                f"a part decodes to {len(data)} bytes, not {raw_size}"
            )
        return data


def _positions(encoding, raw, n, index):
    if encoding == "bitmask":
        bits = np.unpackbits(np.frombuffer(raw, np.uint8))
        if bits[n:].any():
            raise CorruptError("bitmask padding is not zero")
        return np.flatnonzero(bits[:n])
    if encoding == "runs":
        runs = np.frombuffer(raw, np.uint8)
        if runs.size and runs[-1] == 255:
            raise CorruptError("run lengths end inside a run")
        ends = runs < 255
        positions = np.cumsum(runs, dtype=np.int64)[ends] + np.arange(
            ends.sum()
        )
    else:
        if index not in [dtype.str for dtype in _INDEX_DTYPES]:
            raise CorruptError(f"invalid index dtype {index!r}")
        steps = np.frombuffer(raw, np.dtype(index)).astype(np.int64)
        if steps.size > 1 and not steps[1:].all():
            raise CorruptError("indices repeat")
        positions = np.cumsum(steps)
    if positions.size and positions[-1] >= n:
        raise CorruptError("a kept position lies past the end of its tensor")
    return positions
