"""Which weights of which layers are pruned.

Layers are matched with `isinstance`, so subclasses of `Dense` or `Conv2D`
are pruned like their base class. A custom layer names its own prunable
weights by implementing `PrunableLayer.get_prunable_weights()` (or just
defining that method).
"""

import abc

import keras

L = keras.layers

# Layer types and the attributes that hold their prunable kernels. Biases,
# normalization scales and other vectors are never pruned.
_KERNEL_ATTRIBUTES = (
    ((L.SeparableConv1D, L.SeparableConv2D), ("depthwise_kernel",
                                              "pointwise_kernel")),
    ((L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.Conv1DTranspose,
      L.Conv2DTranspose, L.Conv3DTranspose, L.DepthwiseConv1D,
      L.DepthwiseConv2D), ("kernel",)),
    ((L.Embedding,), ("embeddings",)),
)

# Built-in layers that hold no kernel, recognised even before they are built.
_NOTHING_TO_PRUNE = (
    L.InputLayer, L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Softmax,
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianDropout, L.GaussianNoise, L.AlphaDropout,
    L.ActivityRegularization, L.Flatten, L.Reshape, L.Permute,
    L.RepeatVector, L.Masking, L.Lambda, L.Identity,
    L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
    L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.BatchNormalization, L.LayerNormalization, L.GroupNormalization,
    L.UnitNormalization, L.Normalization, L.Rescaling, L.Resizing,
    L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum,
    L.Concatenate, L.Dot, L.PReLU,
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


def is_prunable(layer):
    """True when the layer has kernels this library knows how to prune."""
    return _declares_weights(layer) or any(
        isinstance(layer, types) for types, _ in _KERNEL_ATTRIBUTES
    )


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


def prunable_weights(layer):
    """The variables of a built, prunable layer that get masks, in order."""
    if _declares_weights(layer):
        weights = list(layer.get_prunable_weights())
    else:
        weights = []
        for types, attributes in _KERNEL_ATTRIBUTES:
            if isinstance(layer, types):
                weights = [getattr(layer, name) for name in attributes]
                break
    for weight in weights:
        if not isinstance(weight, keras.Variable):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) must expose "
                "its prunable weights as `keras.Variable`s, but one is a "
                f"{type(weight).__name__} (a quantized or LoRA-enabled "
                "layer?). Prune the float layer before quantizing it or "
                "enabling LoRA."
            )
    return weights
