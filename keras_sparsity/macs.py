"""How often each kernel weight is multiplied per example, per layer type.

`weight_uses(layer)` maps each kernel variable of a built layer to a label,
the kind of product it takes part in, and its number of uses per example:
output positions of a convolution, time steps of a recurrent kernel,
tokens of a `Dense` layer applied to a sequence. Multiply-accumulates per
example are then `uses * weights` (dense) or `uses * non-zeros` (sparse).
The input shape comes from the layer's build config; where a size is
unknown (a variable sequence length) the count is `None`.
"""

import math

import keras

L = keras.layers


def weight_uses(layer):
    """`{id(variable): (label, operation, uses)}` for `layer`'s kernels.

    `operation` is one of `"dense"`, `"conv"`, `"conv_transpose"`,
    `"depthwise"`, `"einsum"`, `"recurrent"`, `"conv_recurrent"`,
    `"embedding"` (a lookup: 0 uses). Variables of layer types not listed
    here are left out.

    Example:

    ```python
    dense = keras.layers.Dense(4)
    dense.build((None, 10, 8))        # applied to 10 tokens
    weight_uses(dense)[id(dense.kernel)]  # ("kernel", "dense", 10)
    ```
    """
    out = {}
    _describe(layer, _input_shape(layer), "", 1, out)
    return out


def multiply_accumulates(uses, num_weights):
    """`uses * num_weights` per example, or None when `uses` is unknown."""
    return _times(uses, num_weights)


def _input_shape(layer):
    config = layer.get_build_config() or {}
    shape = config.get("input_shape")
    if isinstance(shape, (list, tuple)) and all(
        d is None or isinstance(d, int) for d in shape
    ):
        return tuple(shape)
    return None


def _product(dims):
    """Product of sizes, or None if any is unknown."""
    if dims is None or any(d is None for d in dims):
        return None
    return math.prod(dims)


def _times(positions, repeat):
    return None if positions is None or repeat is None else positions * repeat


def _describe(layer, shape, prefix, repeat, out):
    """Fills `out[id(variable)] = (label, operation, positions)`.

    `positions` is how often each weight is multiplied per example: output
    positions of a convolution, time steps of a recurrent kernel, tokens
    of a Dense layer applied to a sequence.
    """

    def add(variable, operation, positions, name=None):
        label = prefix + (name or variable.name)
        out[id(variable)] = (label, operation, _times(positions, repeat))

    if isinstance(layer, L.Bidirectional):
        for direction in (layer.forward_layer, layer.backward_layer):
            _describe(direction, shape, f"{direction.name}/", repeat, out)
    elif isinstance(layer, L.TimeDistributed):
        steps = None if shape is None else shape[1]
        inner = layer.layer
        _describe(
            inner, _input_shape(inner), prefix, _times(steps, repeat), out
        )
    elif isinstance(layer, L.RNN):
        positions = None if shape is None else shape[1]
        operation = "recurrent"
        if isinstance(layer, (L.ConvLSTM1D, L.ConvLSTM2D, L.ConvLSTM3D)):
            operation = "conv_recurrent"
            positions = _times(positions, _conv_rnn_positions(layer, shape))
        cells = getattr(layer.cell, "cells", [layer.cell])
        for cell in cells:
            cell_prefix = f"{cell.name}/" if len(cells) > 1 else ""
            for variable in (cell.kernel, cell.recurrent_kernel):
                add(variable, operation, positions, cell_prefix + variable.name)
    elif isinstance(layer, L.MultiHeadAttention):
        _describe_attention(layer, prefix, repeat, out)
    elif isinstance(layer, L.EinsumDense):
        add(layer.kernel, "einsum", _einsum_positions(layer, shape))
    elif isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        positions = _conv_positions(layer, shape, transposed=False)
        add(layer.depthwise_kernel, "depthwise", positions)
        add(layer.pointwise_kernel, "conv", positions)
    elif isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        add(layer.kernel, "depthwise", _conv_positions(layer, shape, False))
    elif isinstance(
        layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
    ):
        add(layer.kernel, "conv_transpose", _conv_positions(layer, shape, True))
    elif isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        add(layer.kernel, "conv", _conv_positions(layer, shape, False))
    elif isinstance(layer, L.Embedding):
        add(layer.embeddings, "embedding", 0)
    elif isinstance(layer, L.Dense):
        positions = None if shape is None else _product(shape[1:-1])
        add(layer.kernel, "dense", positions)


def _describe_attention(layer, prefix, repeat, out):
    shapes = (layer.get_build_config() or {}).get("shapes_dict", {})
    query = shapes.get("query_shape")
    value = shapes.get("value_shape")
    key = shapes.get("key_shape") or value
    for dense, shape in (
        (layer.query_dense, query),
        (layer.key_dense, key),
        (layer.value_dense, value),
        (layer.output_dense, query),
    ):
        positions = None if shape is None else _product(shape[1:-1])
        out[id(dense.kernel)] = (
            f"{prefix}{dense.name}/{dense.kernel.name}",
            "einsum",
            _times(positions, repeat),
        )


def _einsum_positions(layer, shape):
    """Sizes of the input's letters that the kernel lacks, batch excluded."""
    if shape is None:
        return None
    inputs = layer.equation.split("->")[0]
    letters, kernel = inputs.split(",")
    if len(letters) != len(shape):
        return None
    return _product(
        [
            size
            for letter, size in zip(letters[1:], shape[1:])
            if letter not in kernel
        ]
    )


def _conv_positions(layer, shape, transposed):
    """Output positions (input positions for a transposed convolution)."""
    if shape is None:
        return None
    if not transposed:
        shape = tuple(layer.compute_output_shape(shape))
    return _product(_spatial(shape, layer.data_format))


def _spatial(shape, data_format):
    return shape[1:-1] if data_format == "channels_last" else shape[2:]


def _conv_rnn_positions(layer, shape):
    if shape is None:
        return None
    output = layer.compute_output_shape(shape)
    if isinstance(output, list):
        output = output[0]
    rank = len(shape) - 3
    # (T,) + spatial with return_sequences, spatial alone otherwise.
    return _product(_spatial(tuple(output), layer.cell.data_format)[-rank:])
