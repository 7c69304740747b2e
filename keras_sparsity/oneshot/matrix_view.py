"""A kernel read as the matrix one-shot pruning works on: (outputs, inputs).

SparseGPT and Wanda are written for a linear layer `y = x W^T` with `W` of
shape `(d_out, d_in)`. A Dense kernel `(in, out)` is that matrix transposed;
an EinsumDense kernel (an attention projection `(hidden, heads, head_dim)` or
`(heads, head_dim, hidden)`) is flattened first: its reduction axes (the
letters its equation sums over, `registry.prunable_weights`) become the
input axis, in kernel order, and the others the output axis. The layer's
input is flattened the same way, so that column `j` of the matrix meets
feature `j` of every input row.

A Conv1D or Conv2D kernel `(*kernel_size, in, out)` is the matrix
`(out, prod(kernel_size) * in)`, and its input rows are the input's
patches (im2col): one row per output position and example, holding the
window the kernel meets there (after the layer's padding, with its strides
and dilation), flattened in the kernel's order.
"""

import itertools
import math

import keras
from keras import ops

from keras_sparsity import registry

CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D)
LAYER_TYPES = (keras.layers.Dense, keras.layers.EinsumDense) + CONVOLUTIONS


class KernelMatrix:
    """The kernel of a Dense, EinsumDense, Conv1D or Conv2D layer as a
    `(d_out, d_in)` matrix, and the layer's inputs as rows of `d_in`.

    Args:
        layer: A built layer of one of `LAYER_TYPES`.

    Raises `ValueError` for an EinsumDense whose equation sums over a kernel
    axis the input does not have, or uses `...` in its kernel, and for a
    grouped convolution (`groups > 1`).

    Example: `KernelMatrix(conv).input_rows(x) @ KernelMatrix(conv).read().T`
    is the convolution of `x` without bias, one row per output position.
    """

    def __init__(self, layer):
        self.layer = layer
        (pruned,) = registry.prunable_weights(layer)
        self.variable = pruned.variable
        self.permutation = pruned.permutation
        shape = tuple(self.variable.shape)
        num_reduced = len(pruned.reduction_axes)
        self.num_inputs = math.prod(shape[a] for a in pruned.reduction_axes)
        self.num_outputs = math.prod(
            shape[a] for a in self.permutation[num_reduced:]
        )
        self._permuted_shape = tuple(shape[a] for a in self.permutation)
        self._input_letters = None
        if isinstance(layer, keras.layers.EinsumDense):
            self._input_letters = _reduced_input_letters(
                layer, pruned.reduction_axes
            )
        if isinstance(layer, CONVOLUTIONS) and layer.groups != 1:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is a grouped "
                f"convolution (groups={layer.groups}), which one-shot "
                "pruning cannot read as one matrix. Exclude it with "
                "`layers=`."
            )
        self.num_channels = shape[pruned.reduction_axes[-1]]

    @property
    def name(self):
        return self.layer.path or self.layer.name

    def read(self):
        """The kernel as a float32 `(d_out, d_in)` tensor."""
        kernel = ops.cast(self.variable.value, "float32")
        matrix = ops.reshape(
            ops.transpose(kernel, self.permutation),
            (self.num_inputs, self.num_outputs),
        )
        return ops.transpose(matrix)

    def to_kernel(self, matrix):
        """A `(d_out, d_in)` tensor in the kernel's own shape and order."""
        permuted = ops.reshape(ops.transpose(matrix), self._permuted_shape)
        inverse = sorted(
            range(len(self.permutation)), key=self.permutation.__getitem__
        )
        return ops.transpose(permuted, inverse)

    def write(self, matrix):
        """Assigns a `(d_out, d_in)` matrix to the kernel."""
        self.variable.assign(
            ops.cast(self.to_kernel(matrix), self.variable.dtype)
        )

    def input_rows(self, inputs):
        """The layer's input as float32 rows `(num_rows, d_in)`."""
        inputs = ops.cast(inputs, "float32")
        if isinstance(self.layer, CONVOLUTIONS):
            patches = _patches(self.layer, inputs)
            return ops.reshape(patches, (-1, self.num_inputs))
        if self._input_letters is not None:
            inputs = ops.transpose(inputs, self._input_order(len(inputs.shape)))
        return ops.reshape(inputs, (-1, self.num_inputs))

    def _input_order(self, rank):
        """Input axes with the reduced ones last, in kernel order."""
        spec = self._input_letters[0]
        if "..." in spec:
            head, tail = spec.split("...")
            spec = head + "." * (rank - len(head) - len(tail)) + tail
        reduced = [spec.index(letter) for letter in self._input_letters[1]]
        kept = [axis for axis in range(rank) if axis not in reduced]
        return kept + reduced


def _patches(layer, inputs):
    """im2col: `(batch, *output positions, prod(kernel_size), in)` windows
    of a channels-last copy of `inputs`, kernel offsets in row-major order
    (the order of the kernel's spatial axes)."""
    rank = len(layer.kernel_size)
    if layer.data_format == "channels_first":
        inputs = ops.transpose(inputs, (0, *range(2, rank + 2), 1))
    spans = [
        (size - 1) * rate + 1
        for size, rate in zip(layer.kernel_size, layer.dilation_rate)
    ]
    padding = [(0, 0)]
    for axis, (span, stride) in enumerate(zip(spans, layer.strides)):
        size = inputs.shape[1 + axis]
        if layer.padding == "same":
            total = max((-(-size // stride) - 1) * stride + span - size, 0)
            padding.append((total // 2, total - total // 2))
        elif layer.padding == "causal":
            padding.append((span - 1, 0))
        else:
            padding.append((0, 0))
    padding.append((0, 0))
    if any(before or after for before, after in padding):
        inputs = ops.pad(inputs, padding)
    outputs = [
        (inputs.shape[1 + axis] - span) // stride + 1
        for axis, (span, stride) in enumerate(zip(spans, layer.strides))
    ]
    windows = []
    for offsets in itertools.product(*(range(k) for k in layer.kernel_size)):
        index = [slice(None)]
        for offset, rate, stride, count in zip(
            offsets, layer.dilation_rate, layer.strides, outputs
        ):
            start = offset * rate
            index.append(slice(start, start + (count - 1) * stride + 1, stride))
        windows.append(inputs[tuple(index)])
    return ops.stack(windows, axis=-2)


def _reduced_input_letters(layer, reduction_axes):
    """`(input spec, reduced letters in kernel order)` of an EinsumDense."""
    inputs, _ = layer.equation.replace(" ", "").split("->")
    input_spec, kernel_spec = inputs.split(",")
    letters = [kernel_spec[axis] for axis in reduction_axes]
    if "..." in kernel_spec or any(c not in input_spec for c in letters):
        raise ValueError(
            f"Layer {layer.name!r} (EinsumDense) has equation "
            f"{layer.equation!r}, which one-shot pruning cannot read as a "
            "matrix of (inputs, outputs): every axis its kernel sums over "
            "must be an input axis. Exclude it with `layers=`."
        )
    return input_spec, letters
