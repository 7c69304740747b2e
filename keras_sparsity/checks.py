"""Argument checks shared by the functions that save, export or report."""

import os

import keras


def check_path(path):
    """Returns `path` as a str; a `TypeError` unless str or os.PathLike."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Argument `path` must be a str or os.PathLike. "
            f"Received: path={path!r} of type {type(path).__name__}"
        )
    return os.fspath(path)


def check_built_model(model, purpose):
    """Raises unless `model` is a built `keras.Model`.

    `purpose` finishes the sentence "so that it has weights to ...".
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model. Received: model of "
            f"type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"Argument `model` must be built, so that it has weights to "
            f"{purpose}: call it on data or call `model.build(input_shape)`. "
            f"Received: model={model.name!r}, not built"
        )
