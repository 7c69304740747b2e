"""Calibration data: what one-shot pruning feeds the model, checked early.

Accepted: one batch (a NumPy array or tensor, a dict of them such as a
KerasHub preprocessor's `{"token_ids", "padding_mask"}`, or a list of them
for a multi-input model), a Python iterable of such batches, or a
`tf.data.Dataset`. A batch that is a tuple `(x, y)` or `(x, y, weights)` is
read as Keras' `fit` reads it: `x` is the model's input.
"""

import keras
import numpy as np


def calibration_batches(data):
    """The calibration batches as a list (an iterable is read once).

    Raises `ValueError` naming `calibration_data` when there is none or a
    batch holds no samples.
    """
    if data is None:
        raise ValueError(
            "Argument `calibration_data` is required for this method: pass "
            "a few batches of typical inputs (e.g. 128 sequences of the "
            "model's context length), as an array, a dict of arrays, an "
            "iterable of batches or a tf.data.Dataset. Received: "
            "calibration_data=None"
        )
    if isinstance(data, (str, bytes)):
        raise TypeError(
            "Argument `calibration_data` must be an array, a dict of "
            "arrays, an iterable of batches or a tf.data.Dataset. "
            f"Received: calibration_data={data!r}"
        )
    if _is_batch(data):
        batches = [data]
    else:
        if hasattr(data, "as_numpy_iterator"):
            data = data.as_numpy_iterator()
        try:
            batches = list(data)
        except TypeError:
            raise TypeError(
                "Argument `calibration_data` must be an array, a dict of "
                "arrays, an iterable of batches or a tf.data.Dataset. "
                f"Received: calibration_data of type {type(data).__name__}"
            ) from None
    batches = [_inputs_of(batch) for batch in batches]
    if not batches or any(_num_samples(b) == 0 for b in batches):
        raise ValueError(
            "Argument `calibration_data` must hold at least one batch with "
            "at least one sample: one-shot pruning measures the layers' "
            f"inputs on it. Received: calibration_data with {len(batches)} "
            "batches" + (" (one of them empty)" if batches else "")
        )
    return batches


def _is_batch(data):
    if isinstance(data, dict):
        return True
    return hasattr(data, "shape") and hasattr(data, "dtype")


def _inputs_of(batch):
    if isinstance(batch, tuple):
        batch, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
    return batch


def _num_samples(batch):
    shapes = [
        tuple(getattr(x, "shape", np.shape(x)))
        for x in keras.tree.flatten(batch)
    ]
    sizes = [shape[0] if shape else 1 for shape in shapes]
    return min(sizes) if sizes else 0
