"""Attention heads: which heads of a `MultiHeadAttention` can go, and the
layer's weights without them.

A head contributes nothing when its value projection (kernel columns and
bias) is zero, since it then averages zero vectors, or when the output
projection's rows for it are zero. Removing it changes no output: each
head's softmax sees only its own query and key. The layer is rebuilt with
fewer `num_heads`; its query, key and value kernels `(dim, heads,
head_dim)` and biases `(heads, head_dim)` lose the head along axis 1 and
0, the output kernel `(heads, head_dim, dim)` along axis 0.
"""

import keras
import numpy as np

HEAD_AXES = {"query": 1, "key": 1, "value": 1, "output": 0}


def projections(layer):
    """`{"query"|"key"|"value"|"output": EinsumDense}` of an attention
    layer."""
    return {
        "query": layer.query_dense,
        "key": layer.key_dense,
        "value": layer.value_dense,
        "output": layer.output_dense,
    }


def is_attention(layer):
    """True for a `MultiHeadAttention` (and subclasses such as
    `GroupedQueryAttention` are not: their key/value heads are shared)."""
    return type(layer) is keras.layers.MultiHeadAttention


def silent_heads(layer):
    """Indices of the heads whose value projection or output rows are all
    zero."""
    found = projections(layer)
    value = keras.ops.convert_to_numpy(found["value"].kernel)
    silent = ~value.any(axis=(0, 2))
    if found["value"].bias is not None:
        bias = keras.ops.convert_to_numpy(found["value"].bias)
        silent &= ~bias.any(axis=1)
    output = keras.ops.convert_to_numpy(found["output"].kernel)
    silent |= ~output.any(axis=(1, 2))
    return np.flatnonzero(silent)


def sliced_weights(layer, keep):
    """`layer.get_weights()` with only the heads in `keep`."""
    axes = {}
    for name, dense in projections(layer).items():
        axes[id(dense.kernel)] = HEAD_AXES[name]
        if dense.bias is not None and name != "output":
            axes[id(dense.bias)] = 0
    return [
        np.take(keras.ops.convert_to_numpy(w), keep, axis=axes[id(w)])
        if id(w) in axes
        else keras.ops.convert_to_numpy(w)
        for w in layer.weights
    ]
