"""What `shrink` knows about each layer type: how a layer treats channels.

Every call in a model's graph is one of these kinds:

* `KERNEL` (Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, SeparableConv1D/2D):
  reads input channels through kernel rows and writes a new group of
  output channels;
* `DEPTHWISE` (DepthwiseConv1D/2D with `depth_multiplier=1`) and
  `CHANNELWISE` (BatchNormalization over the last axis): channel-local
  layers with per-channel weights, which lose a channel with their input;
* `PASSTHROUGH`: channel-local layers without weights (activations,
  dropout, noise, pooling, global pooling, padding, cropping, upsampling);
* `MERGE` (Add, Subtract, Multiply, Maximum, Minimum, Average): their
  inputs' channels are one group;
* `CONCAT` (Concatenate) and `FLATTEN` (Flatten);
* `UNKNOWN`: anything else, whose channels are kept, with a reason.

Only channels-last layers are cut.
"""

import keras
import numpy as np

L = keras.layers

KERNEL = "kernel"
DEPTHWISE = "depthwise"
CHANNELWISE = "channelwise"
PASSTHROUGH = "passthrough"
MERGE = "merge"
CONCAT = "concat"
FLATTEN = "flatten"
UNKNOWN = "unknown"

_CONVS = (L.Conv1D, L.Conv2D, L.Conv3D)
_SEPARABLES = (L.SeparableConv1D, L.SeparableConv2D)
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_DEPTHWISES = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_MERGES = (L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum, L.Average)
_PASSTHROUGHS = (
    L.Activation,
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianDropout,
    L.GaussianNoise,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Identity,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
)
_CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def classify(layer, input_shapes):
    """The kind of one call of `layer`, and why when it is `UNKNOWN`.

    Args:
        layer: The operation called (a layer, or a `keras.ops` operation).
        input_shapes: The shapes of the call's input tensors.

    Returns:
        `(kind, reason)`, `reason` None unless the kind is `UNKNOWN`.
    """
    name = f"{type(layer).__name__}"
    if isinstance(layer, keras.Model):
        return UNKNOWN, f"is a nested model ({name}), which is not traversed"
    if not isinstance(layer, L.Layer):
        return UNKNOWN, f"is a keras.ops call ({name})"
    if isinstance(layer, L.MultiHeadAttention):
        return UNKNOWN, (
            f"is a {name}: shrink cuts its heads, not its input and output "
            "channels"
        )
    if isinstance(layer, (L.LayerNormalization, L.GroupNormalization)):
        return UNKNOWN, (
            f"is a {name}, which normalizes over the channel axis: removing "
            "a channel changes every other channel's output"
        )
    if getattr(layer, "data_format", None) == "channels_first":
        return UNKNOWN, f"is a channels_first {name}"
    rank = len(input_shapes[0]) if input_shapes else 0
    if isinstance(layer, L.Dense) or isinstance(
        layer, _CONVS + _SEPARABLES + _TRANSPOSED
    ):
        return _kernel_kind(layer, name)
    if isinstance(layer, _DEPTHWISES):
        if layer.depth_multiplier != 1:
            return UNKNOWN, f"is a {name} with depth_multiplier != 1"
        return DEPTHWISE, None
    if isinstance(layer, L.BatchNormalization):
        if layer.axis not in (-1, rank - 1):
            return UNKNOWN, f"is a {name} over axis {layer.axis}, not the last"
        return CHANNELWISE, None
    if isinstance(layer, L.Activation) and _mixes_channels(layer.activation):
        return UNKNOWN, f"is an {name} that mixes channels (softmax)"
    if isinstance(layer, _PASSTHROUGHS):
        return PASSTHROUGH, None
    if isinstance(layer, _MERGES):
        return MERGE, None
    if isinstance(layer, L.Concatenate):
        return CONCAT, None
    if isinstance(layer, L.Flatten):
        return FLATTEN, None
    return UNKNOWN, f"is a {name}, which shrink cannot slice"


def _kernel_kind(layer, name):
    if getattr(layer, "groups", 1) != 1:
        return UNKNOWN, f"is a grouped {name} (groups={layer.groups})"
    return KERNEL, None


def _mixes_channels(activation):
    return getattr(activation, "__name__", "") in _CHANNEL_MIXING_ACTIVATIONS


def mixes_output_channels(layer):
    """True when a `KERNEL` layer's own activation mixes its outputs."""
    return _mixes_channels(getattr(layer, "activation", None))


def folds_constants(layer):
    """True when a constant input channel of a `KERNEL` layer can be folded
    into its bias exactly: it has a bias and it is a Dense, or a convolution
    with 'valid' padding (zero padding at the borders would make the
    channel's contribution vary with position)."""
    if not getattr(layer, "use_bias", False) or is_transposed(layer):
        return False  # a transposed convolution's borders see fewer taps
    return isinstance(layer, L.Dense) or layer.padding == "valid"


def output_units_key(layer):
    """The config key that sets a `KERNEL` layer's output channels."""
    return "units" if isinstance(layer, L.Dense) else "filters"


def is_separable(layer):
    """True for SeparableConv1D/2D."""
    return isinstance(layer, _SEPARABLES)


def is_transposed(layer):
    """True for Conv1D/2D/3DTranspose, whose kernel is `(..., out, in)`."""
    return isinstance(layer, _TRANSPOSED)


def kernel_of(layer):
    """A `KERNEL` layer's kernel as `(..., in, out)`: the pointwise kernel
    of a SeparableConv, a transposed convolution's with its last two axes
    swapped."""
    if is_separable(layer):
        return keras.ops.convert_to_numpy(layer.pointwise_kernel)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    return np.swapaxes(kernel, -1, -2) if is_transposed(layer) else kernel


def is_depthwise(layer):
    """True for DepthwiseConv1D/2D."""
    return isinstance(layer, _DEPTHWISES)
