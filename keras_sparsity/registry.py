"""Which weights of which layers are pruned.

Layers are matched with `isinstance`, so subclasses of `Dense` or `Conv2D`
are pruned like their base class. A custom layer names its own prunable
weights by implementing `PrunableLayer.get_prunable_weights()` (or just
defining that method).
"""

import abc

import keras

from keras_sparsity import _compat

L = keras.layers

# Built-in layers that hold no kernel, recognised even before they are built.
_NOTHING_TO_PRUNE = (
    L.InputLayer,
    L.Activation,
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.Softmax,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianDropout,
    L.GaussianNoise,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Flatten,
    L.Reshape,
    L.Permute,
    L.RepeatVector,
    L.Masking,
    L.Lambda,
    L.Identity,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
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
    L.BatchNormalization,
    L.LayerNormalization,
    L.GroupNormalization,
    L.UnitNormalization,
    L.Normalization,
    L.Rescaling,
    L.Resizing,
    L.Add,
    L.Subtract,
    L.Multiply,
    L.Average,
    L.Maximum,
    L.Minimum,
    L.Concatenate,
    L.Dot,
    L.PReLU,
)


class PrunableLayer(abc.ABC):
    """A layer that names the weights to prune.

    Mix it into a custom layer and return the variables to prune from
    `get_prunable_weights()`. It is called after the layer is built. Any
    layer that simply defines `get_prunable_weights()` is accepted as well.

    Example:

    ```python
    class MyDense(keras.layers.Dense, sparsity.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel]
    ```
    """

    @abc.abstractmethod
    def get_prunable_weights(self):
        """Returns the list of `keras.Variable`s to prune."""


def _declares_weights(layer):
    return isinstance(layer, PrunableLayer) or callable(
        getattr(layer, "get_prunable_weights", None)
    )


_KERNEL_LAYERS = (
    L.Dense,
    L.Conv1D,
    L.Conv2D,
    L.Conv3D,
    L.Conv1DTranspose,
    L.Conv2DTranspose,
    L.Conv3DTranspose,
    L.DepthwiseConv1D,
    L.DepthwiseConv2D,
    L.SeparableConv1D,
    L.SeparableConv2D,
    L.Embedding,
    L.EinsumDense,
    L.MultiHeadAttention,
)
_RNN_CELLS = (L.LSTMCell, L.GRUCell, L.SimpleRNNCell)
_CONV_RNNS = (L.ConvLSTM1D, L.ConvLSTM2D, L.ConvLSTM3D)


def is_prunable(layer):
    """True when the layer has kernels this library knows how to prune.

    Decided from the layer's type (and its cells or wrapped layers), so it
    works before the layer is built.
    """
    if _declares_weights(layer) or isinstance(
        layer, _KERNEL_LAYERS + _CONV_RNNS
    ):
        return True
    if isinstance(layer, L.Bidirectional):
        return is_prunable(layer.forward_layer) and is_prunable(
            layer.backward_layer
        )
    if isinstance(layer, L.TimeDistributed):
        return is_prunable(layer.layer)
    if isinstance(layer, L.RNN):
        return _is_prunable_cell(layer.cell)
    return False


def _is_prunable_cell(cell):
    if isinstance(cell, L.StackedRNNCells):
        return all(_is_prunable_cell(c) for c in cell.cells)
    if isinstance(cell, (list, tuple)):
        return all(_is_prunable_cell(c) for c in cell)
    return _declares_weights(cell) or isinstance(cell, _RNN_CELLS)


def has_nothing_to_prune(layer):
    """True for layers that hold no kernel: pooling, dropout, norms, merges.

    A built layer of any type qualifies when none of its weights has rank 2
    or more (biases and scales are never pruned).
    """
    if isinstance(layer, _NOTHING_TO_PRUNE):
        return True
    if isinstance(layer, keras.Model) or not layer.built:
        return False
    return all(len(w.shape) < 2 for w in layer.weights)


def own_weights(layer):
    """Variables created by `layer` itself, not by its sublayers."""
    inner = {id(v) for child in _compat.sublayers(layer) for v in child.weights}
    return [v for v in layer.weights if id(v) not in inner]


def own_kernels(layer):
    """Own weights of rank >= 2 (a sublayer's kernels are that sublayer's
    to prune)."""
    return [v for v in own_weights(layer) if len(v.shape) >= 2]


class PrunedWeight:
    """A variable to mask, and which of its axes are reduction (input) axes.

    Block and N:M patterns read the weight as a (reduction, output) matrix:
    N:M groups run along the last reduction axis, and block rows along the
    flattened reduction axes.
    """

    def __init__(self, variable, reduction_axes):
        self.variable = variable
        self.reduction_axes = tuple(reduction_axes)

    @property
    def permutation(self):
        """Axes order that puts the reduction axes first, in order."""
        rest = [
            a
            for a in range(len(self.variable.shape))
            if a not in self.reduction_axes
        ]
        return self.reduction_axes + tuple(rest)


def _all_but_last(variable):
    return range(len(variable.shape) - 1)


def prunable_weights(layer):
    """The `PrunedWeight`s of a built, prunable layer, in a fixed order.

    Reduction axes per kernel (the README has the full table):
    * Dense, Conv*, pointwise kernels, RNN cells: all axes but the last;
    * Conv*Transpose `(..., out, in)`: the spatial axes and `in`;
    * DepthwiseConv*, depthwise kernels `(..., in, mult)`: spatial axes;
    * Embedding `(vocab, dim)`: the vocabulary axis;
    * EinsumDense and MultiHeadAttention projections: the kernel axes the
      equation sums over.
    """
    if _declares_weights(layer):
        found = [
            PrunedWeight(w, _all_but_last(w))
            for w in layer.get_prunable_weights()
        ]
    else:
        found = _known_weights(layer)
    for pruned in found:
        dtype = getattr(pruned.variable, "dtype", None)
        if isinstance(pruned.variable, keras.Variable) and not (
            keras.backend.is_float_dtype(dtype)
        ):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) holds a "
                f"{dtype} weight {pruned.variable.name!r}: a quantized "
                "model cannot be pruned. Prune the float model, then "
                "quantize the stripped result."
            )
        if not isinstance(pruned.variable, keras.Variable):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) must expose "
                "its prunable weights as `keras.Variable`s, but one is a "
                f"{type(pruned.variable).__name__} (a quantized or "
                "LoRA-enabled layer?). Prune the float layer before "
                "quantizing it or enabling LoRA."
            )
    return found


def _known_weights(layer):
    if isinstance(layer, L.Bidirectional):
        return _known_weights(layer.forward_layer) + _known_weights(
            layer.backward_layer
        )
    if isinstance(layer, L.TimeDistributed):
        return prunable_weights(layer.layer)
    if isinstance(layer, L.RNN):
        return _cell_weights(layer.cell)
    if isinstance(layer, L.MultiHeadAttention):
        return [
            weight
            for dense in (
                layer.query_dense,
                layer.key_dense,
                layer.value_dense,
                layer.output_dense,
            )
            for weight in _known_weights(dense)
        ]
    if isinstance(layer, L.EinsumDense):
        return [PrunedWeight(layer.kernel, _einsum_reduction_axes(layer))]
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        depthwise = layer.depthwise_kernel
        return [
            PrunedWeight(depthwise, range(len(depthwise.shape) - 2)),
            PrunedWeight(
                layer.pointwise_kernel, _all_but_last(layer.pointwise_kernel)
            ),
        ]
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return [PrunedWeight(layer.kernel, range(len(layer.kernel.shape) - 2))]
    if isinstance(
        layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
    ):
        rank = len(layer.kernel.shape)
        return [PrunedWeight(layer.kernel, list(range(rank - 2)) + [rank - 1])]
    if isinstance(layer, L.Embedding):
        return [PrunedWeight(layer.embeddings, (0,))]
    if isinstance(layer, (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)):
        return [PrunedWeight(layer.kernel, _all_but_last(layer.kernel))]
    return []


def _cell_weights(cell):
    if isinstance(cell, L.StackedRNNCells):
        return [w for c in cell.cells for w in _cell_weights(c)]
    if _declares_weights(cell):
        return prunable_weights(cell)
    return [
        PrunedWeight(variable, _all_but_last(variable))
        for variable in (cell.kernel, cell.recurrent_kernel)
    ]


def _einsum_reduction_axes(layer):
    """Kernel axes whose letters do not appear in the equation's output."""
    inputs, output = layer.equation.split("->")
    kernel = inputs.split(",")[1]
    return [axis for axis, letter in enumerate(kernel) if letter not in output]
