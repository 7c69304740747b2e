import math

import numpy as np
import pytest

from keras_sparsity import coding

# File formats and shape arithmetic: no backend code runs.
pytestmark = pytest.mark.backend_independent


def kernel_with(num_kept, shape=(64, 64), seed=0):
    """A float32 kernel with `num_kept` non-zeros at random positions."""
    rng = np.random.RandomState(seed)
    flat = np.zeros(math.prod(shape), "float32")
    positions = rng.choice(flat.size, num_kept, replace=False)
    flat[positions] = rng.randn(num_kept).astype("float32") + 3.0
    return flat.reshape(shape)


@pytest.mark.parametrize(
    "num_kept, encoding",
    [(4096, "dense"), (2048, "bitmask"), (819, "runs"), (3, "indices")],
)
def test_each_encoding_round_trips_bit_exactly(num_kept, encoding):
    kernel = kernel_with(num_kept)
    meta, payload, facts = coding.encode("k", kernel, "float32")
    assert meta["encoding"] == encoding
    assert meta["kept"] == num_kept == facts["nonzeros"]
    assert coding.stored_length(meta) == len(payload) == facts["stored_bytes"]
    assert len(payload) <= kernel.nbytes
    restored = coding.decode("k", meta, payload)
    assert restored.dtype == kernel.dtype and restored.shape == kernel.shape
    assert restored.tobytes() == kernel.tobytes()


def test_int8_decodes_to_the_error_it_reports():
    kernel = kernel_with(819)
    meta, payload, facts = coding.encode("k", kernel, "int8")
    assert meta["values"]["dtype"] == "|i1"
    assert meta["scales"]["size"] == 64 * 4
    restored = coding.decode("k", meta, payload)
    error = np.abs(restored.astype("float64") - kernel.astype("float64"))
    assert facts["max_abs_error"] == error.max() > 0
    np.testing.assert_array_equal(restored[kernel == 0], 0.0)


def test_bound_bytes_is_mask_entropy_plus_value_bits():
    kernel = np.zeros((10, 10), "float32")
    kernel.flat[::5] = 1.0  # 20 of 100 kept
    bias = np.ones(10, "float32")
    entropy = -(0.2 * math.log2(0.2) + 0.8 * math.log2(0.8))
    expected = math.ceil((100 * entropy + 20 * 32 + 10 * 32) / 8)
    assert coding.bound_bytes([kernel, bias], "float32") == expected


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_negative_zeros_are_not_kept_and_decode_bit_exactly(dtype):
    dtype = np.dtype(dtype)
    kernel = kernel_with(819).astype(dtype)
    kernel[kernel == 0] = np.array(-0.0, "float32").astype(dtype)
    kernel[::2][kernel[::2] == 0] = 0  # Half the zeros +0.0, half -0.0.
    meta, payload, facts = coding.encode("k", kernel, "float32")
    assert meta["kept"] == 819 == facts["nonzeros"]
    assert meta["encoding"] == "runs"
    assert meta["signs"]["size"] == math.ceil((64 * 64 - 819) / 8)
    restored = coding.decode("k", meta, payload)
    assert restored.dtype == dtype
    assert restored.tobytes() == kernel.tobytes()


def test_sign_bits_are_stored_only_for_negative_zeros_kept_exactly():
    kernel = kernel_with(819)
    meta, _, _ = coding.encode("k", kernel, "float32")
    assert "signs" not in meta
    kernel[kernel == 0] = -0.0
    for values in ("float16", "int8"):
        meta, payload, _ = coding.encode("k", kernel, values)
        assert "signs" not in meta and meta["kept"] == 819
        restored = coding.decode("k", meta, payload)
        assert not np.signbit(restored[kernel == 0]).any()
    bias = np.array([0.0, -0.0, 1.0], "float32")
    meta, payload, _ = coding.encode("b", bias, "int8")  # Exact: not a kernel.
    assert coding.decode("b", meta, payload).tobytes() == bias.tobytes()


def test_sign_bit_padding_must_be_zero():
    kernel = kernel_with(819)  # 3277 zeros: 3 padding bits in the last byte
    signs = np.random.RandomState(1).rand(64, 64) < 0.5
    kernel[(kernel == 0) & signs] = -0.0
    meta, payload, _ = coding.encode("k", kernel, "float32")
    assert meta["signs"]["codec"] == "raw"  # Random signs do not deflate.
    assert meta["signs"]["size"] == 410
    assert coding.decode("k", meta, payload).tobytes() == kernel.tobytes()
    edited = payload[:-1] + bytes([payload[-1] | 0x01])
    with pytest.raises(coding.CorruptError, match="sign bit padding"):
        coding.decode("k", meta, edited)


def indices_meta():
    meta, payload, _ = coding.encode("k", kernel_with(3), "float32")
    assert meta["encoding"] == "indices" and meta["mask"]["codec"] == "raw"
    return meta, payload


def repeated_index(meta, payload):
    return meta, b"\x05\x00\x00\x00" + payload[4:]


def kept_more(meta, payload):
    return {**meta, "kept": 4}, payload


def truncated(meta, payload):
    return meta, payload[:-1]


def negative_length(meta, payload):
    return {**meta, "mask": {**meta["mask"], "length": -1}}, payload


@pytest.mark.parametrize(
    "edit, problem",
    [
        (repeated_index, "indices repeat"),
        (kept_more, "mask keeps 3, not 4"),
        (truncated, "bytes stored, the parts list"),
        (negative_length, "invalid part sizes"),
    ],
)
def test_inconsistent_meta_and_payload_raise_corrupt_error(edit, problem):
    meta, payload = edit(*indices_meta())
    with pytest.raises(coding.CorruptError, match=problem):
        coding.decode("k", meta, payload)


def test_bitmask_padding_must_be_zero():
    kernel = kernel_with(30, shape=(5, 13))  # 65 bits: 7 padding bits
    meta, payload, _ = coding.encode("k", kernel, "float32")
    assert meta["encoding"] == "bitmask" and meta["mask"]["codec"] == "raw"
    edited = payload[:8] + bytes([payload[8] | 0x01]) + payload[9:]  # bit 71
    with pytest.raises(coding.CorruptError, match="padding is not zero"):
        coding.decode("k", meta, edited)


@pytest.mark.parametrize("values", ["int4", None, "FLOAT32"])
def test_check_values_names_the_accepted_values(values):
    with pytest.raises(ValueError, match=f"Received: values={values!r}"):
        coding.check_values(values)
