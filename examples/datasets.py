"""Readers for the data the examples and benchmarks use.

`load_mnist(data_dir)` reads MNIST in its IDX format from a directory (the
files as published, gzipped or not), so the examples run on any copy of
MNIST. `load_text(path)` turns a text file into character ids for a
character-level language model. Neither downloads anything.
"""

import gzip
import os

import numpy as np

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MNIST_PREFIXES = ("train", "t10k")


def read_idx(path):
    """Returns the array stored in an IDX file (`.gz` or raw)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise ValueError(f"{path}: unknown IDX element type {data[2]:#x}.")
    rank = data[3]
    header = 4 + 4 * rank
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)
    )
    array = np.frombuffer(data, dtype=dtype, offset=header)
    if array.size != int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated: its header says {shape}, it holds "
            f"{array.size} values."
        )
    return array.reshape(shape)


def _find(data_dir, prefix, kind):
    for suffix in (".gz", ""):
        path = os.path.join(data_dir, f"{prefix}-{kind}{suffix}")
        if os.path.exists(path):
            return path
    return None


def load_mnist(data_dir, num_train=8000, num_test=2000, seed=0):
    """Reads MNIST from `data_dir` and splits it into train and test sets.

    All IDX image/label pairs found in `data_dir` (`train-*` and `t10k-*`,
    gzipped or not) are pooled, shuffled with `seed` and split: the first
    `num_train` examples train, the next `num_test` test. Images are
    float32 in [0, 1] with shape `(n, 28, 28)`; labels are int32.

    Returns:
        `(x_train, y_train), (x_test, y_test)`.
    """
    images, labels = [], []
    for prefix in _MNIST_PREFIXES:
        image_path = _find(data_dir, prefix, "images-idx3-ubyte")
        label_path = _find(data_dir, prefix, "labels-idx1-ubyte")
        if image_path and label_path:
            images.append(read_idx(image_path))
            labels.append(read_idx(label_path))
    if not images:
        raise ValueError(
            f"No MNIST IDX files in {data_dir!r}: expected "
            "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] "
            "(or the train-* pair)."
        )
    x = np.concatenate(images).astype("float32") / 255.0
    y = np.concatenate(labels).astype("int32")
    if num_train + num_test > len(x):
        raise ValueError(
            f"num_train + num_test = {num_train + num_test} is more than the "
            f"{len(x)} examples in {data_dir!r}."
        )
    order = np.random.default_rng(seed).permutation(len(x))
    train = order[:num_train]
    test = order[num_train : num_train + num_test]
    return (x[train], y[train]), (x[test], y[test])


def load_text(path, seq_len, validation_fraction=0.1):
    """Reads a text file as character ids, cut into training sequences.

    The vocabulary is the sorted set of characters in the file. The last
    `validation_fraction` of the text is held out. Each split is cut into
    non-overlapping windows of `seq_len + 1` characters: inputs are the
    first `seq_len`, targets the same shifted by one.

    Returns:
        `(x_train, y_train), (x_val, y_val), vocabulary` with int32 arrays of
        shape `(n, seq_len)` and `vocabulary` a string.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    vocabulary = "".join(sorted(set(text)))
    lookup = {c: i for i, c in enumerate(vocabulary)}
    ids = np.array([lookup[c] for c in text], dtype="int32")
    split = int(len(ids) * (1 - validation_fraction))

    def windows(part):
        n = (len(part) - 1) // seq_len
        x = part[: n * seq_len].reshape(n, seq_len)
        y = part[1 : n * seq_len + 1].reshape(n, seq_len)
        return x, y

    return windows(ids[:split]), windows(ids[split:]), vocabulary
