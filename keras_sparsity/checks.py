"""Argument checks shared by the public functions."""

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


def check_output_path(path):
    """Returns `path` as a str, raising unless a file can be written there.

    Raises `TypeError` as `check_path` does, `FileNotFoundError` when the
    folder that would hold the file does not exist, `NotADirectoryError`
    when it is a file, and `IsADirectoryError` when `path` is a folder, each
    naming `path` (not the temporary file written beside it).
    """
    path = check_path(path)
    if not path:
        raise ValueError(
            "Argument `path` must name the file to write, e.g. "
            f"'model.keras'. Received: path={path!r}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise FileNotFoundError(
            f"Argument `path` must be in an existing folder, but {folder!r} "
            "does not exist. Create it first, e.g. with "
            f"`os.makedirs({folder!r}, exist_ok=True)`. Received: path={path!r}"
        )
    if not os.path.isdir(folder):
        raise NotADirectoryError(
            f"Argument `path` must be in a folder, but {folder!r} is a file. "
            f"Received: path={path!r}"
        )
    if os.path.isdir(path):
        raise IsADirectoryError(
            "Argument `path` must name a file, but it is an existing folder. "
            f"Add a file name to it. Received: path={path!r}"
        )
    return path


def check_flag(name, value):
    """Raises unless `value` is a bool: a string such as "no" is truthy."""
    if not isinstance(value, bool):
        raise TypeError(
            f"Argument `{name}` must be True or False. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )


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
