"""What `oneshot.prune` is asked to do, checked before anything changes.

`check_arguments` and `check_model` reject bad input with errors that name
the argument; `kernel_views` finds the chosen layers as `KernelMatrix` views
(Dense, EinsumDense, Conv1D, Conv2D), warning once for each one that
cannot be read as a matrix.
"""

import numbers
import re
import warnings

import keras

from keras_sparsity import _compat
from keras_sparsity.oneshot.matrix_view import CONVOLUTIONS
from keras_sparsity.oneshot.matrix_view import LAYER_TYPES
from keras_sparsity.oneshot.matrix_view import KernelMatrix
from keras_sparsity.oneshot.owl import OutlierWeighted
from keras_sparsity.walk import pruning_wrappers

METHODS = ("magnitude", "wanda", "sparsegpt")
ALLOCATIONS = ("uniform", "owl")


def check_arguments(method, sparsity, m_by_n, allocation):
    """Raises for an unknown method or allocation, a sparsity outside
    [0, 1), a bad `m_by_n`, or N:M with a per-block allocation."""
    if method not in METHODS:
        raise ValueError(
            f"Argument `method` must be one of {METHODS}. "
            f"Received: method={method!r}"
        )
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise TypeError(
            "Argument `sparsity` must be a float in [0, 1), e.g. 0.5 to zero "
            f"half of each kernel. Received: sparsity={sparsity!r}"
        )
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            "Argument `sparsity` must be a float in [0, 1), e.g. 0.5 to zero "
            f"half of each kernel. Received: sparsity={sparsity!r}"
        )
    if m_by_n is not None:
        valid = (
            isinstance(m_by_n, (tuple, list))
            and len(m_by_n) == 2
            and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool)
                for v in m_by_n
            )
            and 0 < m_by_n[0] < m_by_n[1]
        )
        if not valid:
            raise ValueError(
                "Argument `sparsity_m_by_n` must be None or a pair of ints "
                "(m, n) with 0 < m < n: m zeros in every n consecutive "
                "inputs, e.g. (2, 4). Received: "
                f"sparsity_m_by_n={m_by_n!r}"
            )
    if not (
        allocation in ALLOCATIONS or isinstance(allocation, OutlierWeighted)
    ):
        raise ValueError(
            f"Argument `allocation` must be one of {ALLOCATIONS} or an "
            f"`OutlierWeighted`. Received: allocation={allocation!r}"
        )
    if m_by_n is not None and allocation != "uniform":
        raise ValueError(
            "Argument `sparsity_m_by_n` fixes every kernel at m/n sparsity, "
            "so it cannot be combined with a per-block allocation; use "
            f"allocation='uniform'. Received: allocation={allocation!r}"
        )


def check_model(model):
    """Raises unless `model` is a built `keras.Model` without pruning
    wrappers."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Argument `model` must be a `keras.Model`. Received: "
            f"model of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "Argument `model` must be built: call it on a batch first. "
            f"Received: model={model.name!r}"
        )
    if pruning_wrappers(model):
        raise ValueError(
            "Argument `model` holds PruneLowMagnitude layers; call "
            "`strip_pruning` first to prune it in one shot. Received: "
            f"model={model.name!r}"
        )


def kernel_views(model, layers, m_by_n):
    """`KernelMatrix` views of the chosen Dense/EinsumDense/Conv layers."""
    if not (layers is None or isinstance(layers, str) or callable(layers)):
        raise TypeError(
            "Argument `layers` must be None, a regex or a callable "
            f"`layer -> bool`. Received: layers={layers!r}"
        )
    views, skipped = [], []
    for layer in _compat.all_sublayers(model):
        if not isinstance(layer, LAYER_TYPES):
            continue
        if not layer.built or not chosen(layer, layers):
            continue
        try:
            view = KernelMatrix(layer)
        except ValueError as error:
            skipped.append(str(error))
            continue
        # A convolution's groups run along its input channels.
        size = view.num_inputs
        if isinstance(layer, CONVOLUTIONS):
            size = view.num_channels
        if m_by_n is not None and size % m_by_n[1]:
            raise ValueError(
                "Argument `sparsity_m_by_n` needs every chosen kernel's "
                f"input size (a convolution's input channels) to be a "
                f"multiple of n={m_by_n[1]}, but layer {view.name!r} has "
                f"{size}; exclude it with `layers=`. Received: "
                f"sparsity_m_by_n={m_by_n}"
            )
        views.append(view)
    for message in skipped:
        warnings.warn(message, stacklevel=3)
    if not views:
        raise ValueError(
            "Argument `layers` chose no Dense, EinsumDense, Conv1D or "
            "Conv2D layer of the "
            "model, so there is nothing to prune in one shot; pass None to "
            "choose them all, or a regex searched in layer paths such as "
            f"'feedforward'. Received: layers={layers!r} for model "
            f"{model.name!r}"
        )
    return views


def chosen(layer, layers):
    """Whether `layers` (None, a regex or a callable) picks `layer`."""
    if layers is None:
        return True
    if isinstance(layers, str):
        return re.search(layers, layer.path or layer.name) is not None
    return bool(layers(layer))
