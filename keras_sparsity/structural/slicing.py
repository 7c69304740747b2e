"""Cutting one layer's weights down to the channels a plan keeps.

Each function takes a built layer and returns its new weights as NumPy
arrays, in the order of `layer.get_weights()`, ready for `set_weights` on
the smaller copy built from the edited config.
"""

import keras
import numpy as np

from keras_sparsity.structural import kinds


def kernel_weights(layer, in_keep, positions, out_keep, constants):
    """New weights of a Dense, Conv, ConvTranspose or SeparableConv layer.

    Args:
        layer: The built layer.
        in_keep: Indices of the input channels that stay.
        positions: How many positions each input channel repeats at in
            the kernel rows (after a Flatten; 1 otherwise).
        out_keep: Indices of the output channels that stay.
        constants: Values of the input channels (NaN where not
            constant); removed ones are folded into the bias.
    """
    weights = [keras.ops.convert_to_numpy(w) for w in layer.get_weights()]
    removed = np.setdiff1d(np.arange(len(constants)), in_keep)
    if kinds.is_separable(layer):
        depthwise, pointwise = weights[0], weights[1]
        multiplier = depthwise.shape[-1]
        folded = _separable_fold(depthwise, pointwise, removed, constants)
        pointwise_rows = _expand(in_keep, multiplier)
        weights[0] = depthwise[..., in_keep, :]
        weights[1] = pointwise[..., pointwise_rows, :][..., out_keep]
    else:
        kernel = weights[0]
        if kinds.is_transposed(layer):  # (..., out, in) -> (..., in, out)
            kernel = np.swapaxes(kernel, -1, -2)
        folded = _kernel_fold(kernel, removed, constants, positions)
        flat_rows = _repeat(in_keep, positions, len(constants))
        kernel = kernel[..., flat_rows, :][..., out_keep]
        if kinds.is_transposed(layer):
            kernel = np.swapaxes(kernel, -1, -2)
        weights[0] = kernel
    if layer.use_bias:
        weights[-1] = (weights[-1] + folded.astype(weights[-1].dtype))[out_keep]
    return weights


def channel_weights(layer, keep):
    """New weights of BatchNormalization or a depthwise convolution: every
    weight loses the removed channels along its channel axis."""
    weights = [keras.ops.convert_to_numpy(w) for w in layer.get_weights()]
    if kinds.is_depthwise(layer):
        kernel, *rest = weights
        return [kernel[..., keep, :]] + [w[keep] for w in rest]
    return [w[keep] for w in weights]


def _repeat(keep, positions, num_channels):
    """Kernel rows of `keep` after a Flatten: `p * C + c`, position-major."""
    return (
        np.arange(positions)[:, None] * num_channels + np.asarray(keep)[None]
    ).reshape(-1)


def _expand(keep, multiplier):
    """Pointwise rows of kept depthwise channels: `c * M + m`."""
    return (
        np.asarray(keep)[:, None] * multiplier + np.arange(multiplier)[None]
    ).reshape(-1)


def _kernel_fold(kernel, removed, constants, positions):
    """What removed constant input channels add to each output."""
    out = np.zeros(kernel.shape[-1], "float64")
    if not len(removed):
        return out
    rows = _repeat(removed, positions, len(constants))
    values = np.tile(constants[removed], positions)
    taken = kernel[..., rows, :].astype("float64")
    spatial = tuple(range(taken.ndim - 2))
    return out + np.einsum("r,ro->o", values, taken.sum(axis=spatial))


def _separable_fold(depthwise, pointwise, removed, constants):
    out = np.zeros(pointwise.shape[-1], "float64")
    if not len(removed):
        return out
    multiplier = depthwise.shape[-1]
    spatial = tuple(range(depthwise.ndim - 2))
    summed = depthwise[..., removed, :].sum(axis=spatial).astype("float64")
    through = (constants[removed][:, None] * summed).reshape(-1)
    matrix = pointwise.reshape(-1, pointwise.shape[-1])
    return out + through @ matrix[_expand(removed, multiplier)]
