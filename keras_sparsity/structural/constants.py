"""Which channels are constant, and their values, as a graph runs.

A channel whose kernel column is all zero outputs its bias (then its
activation) everywhere; channel-local layers after it (BatchNormalization,
activations, pooling, ...) map that constant to another one. Values are
per-channel float arrays with NaN where a channel is not known constant.
"""

import math

import keras
import numpy as np

from keras_sparsity.structural import kinds

# Stands in for a dimension the graph leaves unknown when a layer is run
# on a constant input.
_UNKNOWN_DIM = 8


def unknown(num_channels):
    """Values of `num_channels` channels none of which is known constant."""
    return np.full(num_channels, np.nan)


def zero_columns(kernel):
    """True per output channel (last axis) whose kernel column is all 0."""
    values = keras.ops.convert_to_numpy(kernel)
    return ~values.reshape(-1, values.shape[-1]).any(axis=0)


def produced(layer):
    """Values of a `KERNEL` layer's output channels: its activation of the
    bias (or of 0) where the channel's kernel column is all zero."""
    zero = zero_columns(kinds.kernel_of(layer))
    bias = np.zeros(zero.shape, "float32")
    if layer.use_bias:
        bias = keras.ops.convert_to_numpy(layer.bias).astype("float32")
    activation = getattr(layer, "activation", None)
    if activation is not None:
        bias = keras.ops.convert_to_numpy(
            activation(keras.ops.convert_to_tensor(bias))
        )
    return np.where(zero, bias.astype("float64"), np.nan)


def through(layer, values, input_shape, positions=1, also_known=None):
    """Values after a channel-local layer, found by running the layer.

    The layer runs (in inference mode) on one example of `input_shape`
    whose channels hold their constants (0 where unknown); a channel is
    constant after it when it was constant before (or is in `also_known`,
    e.g. a depthwise channel whose kernel is zero) and its output does not
    vary over positions (zero padding at borders would make it vary).

    Args:
        layer: A built channel-local layer.
        values: Per-channel values of the input (NaN where not constant).
        input_shape: The input's symbolic shape.
        positions: How many positions each channel repeats at along the
            last axis (after a Flatten), channel-minor.
        also_known: Optional boolean array of channels constant after the
            layer whatever their input.
    """
    known = ~np.isnan(values)
    if also_known is not None:
        known = known | also_known
    if not known.any():
        return unknown(len(values))
    shape = [1] + [_UNKNOWN_DIM if d is None else d for d in input_shape[1:]]
    filled = np.tile(np.where(np.isnan(values), 0.0, values), positions)
    inputs = np.broadcast_to(filled.astype("float32"), shape)
    outputs = keras.ops.convert_to_numpy(layer(inputs)).astype("float64")
    flat = outputs.reshape(-1, len(values))
    steady = np.isclose(flat, flat[0], rtol=1e-6, atol=1e-7).all(axis=0)
    return np.where(known & steady, flat[0], np.nan)


_MERGE_FUNCTIONS = (
    (keras.layers.Add, lambda xs: np.sum(xs, axis=0)),
    (keras.layers.Subtract, lambda xs: xs[0] - xs[1]),
    (keras.layers.Multiply, lambda xs: np.prod(xs, axis=0)),
    (keras.layers.Maximum, lambda xs: np.max(xs, axis=0)),
    (keras.layers.Minimum, lambda xs: np.min(xs, axis=0)),
    (keras.layers.Average, lambda xs: np.mean(xs, axis=0)),
)


def merged(layer, values):
    """Values after an elementwise merge of inputs with `values` (NaN in
    any input makes the channel unknown)."""
    stacked = np.stack(values)
    for cls, function in _MERGE_FUNCTIONS:
        if isinstance(layer, cls):
            return function(stacked)
    raise ValueError(f"Not an elementwise merge: {type(layer).__name__}")


def spatial_positions(shape):
    """The number of positions of a channels-last shape (batch excluded),
    or None when one of its dimensions is unknown."""
    dims = shape[1:-1]
    if any(d is None for d in dims):
        return None
    return math.prod(dims)
