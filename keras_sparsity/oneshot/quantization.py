"""Pruned kernels after Keras' own quantization (`Model.quantize`).

What each mode of Keras 3.15 does to a pruned Dense or EinsumDense kernel
(checked on all three backends by `tests/test_oneshot.py`, also after
saving and loading the quantized model):

* `"int8"`: symmetric abs-max quantization per output channel; a zero
  weight is stored as the integer 0 and dequantizes to exactly 0.
* `"int4"`: by default groups of 128 inputs with a scale and a zero point
  per group and output (`Int4QuantizationConfig(block_size=...)` sets the
  group, `-1` quantizes per channel without a zero point). A zero weight
  is stored as its group's zero point, not as 0, and dequantizes to
  `(q - zero) * scale = 0` exactly.
* `"float8"`: the kernel stays float; the product casts kernel and inputs
  to float8 with a scale, and a zero stays zero.

So the zeros survive every one of them, but the stored integers of
`"int4"` are not zero where the weights are: `quantized_values` gives
integers that are, for counting (`keras_sparsity.report` uses it).
"""

import keras
import numpy as np
from keras import ops

QUANTIZED_MODES = ("int8", "int4", "float8")


def is_quantized(layer):
    """True for a Dense or EinsumDense quantized by `quantize("int8")`,
    `"int4"` or `"float8"`."""
    return isinstance(
        layer, (keras.layers.Dense, keras.layers.EinsumDense)
    ) and (getattr(layer, "quantization_mode", None) in QUANTIZED_MODES)


def stored_kernel(layer):
    """The variable a quantized layer stores its kernel in (int8, packed
    two per byte for `"int4"`, float for `"float8"`)."""
    (variable,) = [w for w in layer.weights if w.name == "kernel"]
    return variable


def reduction_axes(layer):
    """The kernel axes a Dense or EinsumDense sums over (its inputs)."""
    rank = len(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return tuple(range(rank - 1))
    inputs, output = layer.equation.split("->")
    kernel = inputs.split(",")[1]
    return tuple(
        axis for axis, letter in enumerate(kernel) if letter not in output
    )


def quantized_values(layer):
    """A quantized kernel's values in its float shape, zero exactly where
    the dequantized weight is zero.

    `"int8"`: the stored integers; `"int4"`: the unpacked integers minus
    their group's zero point (`q - zero`, whose product with the positive
    scale is the dequantized weight); `"float8"`: the float kernel.

    Args:
        layer: A Dense or EinsumDense for which `is_quantized` is True.

    Returns:
        A NumPy array (int32, or float for `"float8"`).

    Example:

    ```python
    model.quantize("int4")
    zeros = (quantized_values(model.layers[0]) == 0).sum()
    ```
    """
    if not is_quantized(layer):
        raise ValueError(
            "Argument `layer` must be a Dense or EinsumDense quantized with "
            f"one of {QUANTIZED_MODES}. Received: layer={layer.name!r} "
            f"({type(layer).__name__}, quantization mode "
            f"{getattr(layer, 'quantization_mode', None)!r})"
        )
    kernel = ops.convert_to_numpy(layer.kernel)
    if layer.quantization_mode == "float8":
        return kernel
    kernel = kernel.astype("int32")
    zero = getattr(layer, "kernel_zero", None)
    if layer.quantization_mode == "int4" and zero is not None:
        # Zero points `(groups, columns)` of the kernel flattened to
        # `(inputs, columns)`; `g_idx` gives each input row its group.
        groups = ops.convert_to_numpy(layer.g_idx).astype("int32")
        zeros = ops.convert_to_numpy(zero).astype("int32")[groups]
        kernel = kernel - np.reshape(zeros, kernel.shape)
    return kernel
