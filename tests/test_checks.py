import os
import pathlib
import re

import keras
import pytest

from keras_sparsity.checks import check_built_model
from keras_sparsity.checks import check_output_path
from keras_sparsity.checks import check_path


def test_paths_are_str_or_path_like():
    assert check_path(pathlib.Path("a/b.keras")) == "a/b.keras"
    assert check_path("m.sparse") == "m.sparse"
    with pytest.raises(TypeError, match=r"`path`.*Received: path=3"):
        check_path(3)


def test_model_must_be_a_built_keras_model():
    built = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    check_built_model(built, "save")
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="weights to save: .*not built"):
        check_built_model(unbuilt, "save")
    with pytest.raises(TypeError, match="must be a keras.Model"):
        check_built_model(keras.layers.Dense(2), "save")


def test_output_paths_must_be_in_an_existing_folder(tmp_path):
    assert check_output_path(tmp_path / "m.zip") == str(tmp_path / "m.zip")
    missing = tmp_path / "missing" / "m.zip"
    with pytest.raises(FileNotFoundError) as info:
        check_output_path(missing)
    message = str(info.value)
    assert repr(str(tmp_path / "missing")) in message
    assert message.endswith(f"Received: path={str(missing)!r}")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match=re.escape("is a file")):
        check_output_path(tmp_path / "file" / "m.zip")
    with pytest.raises(IsADirectoryError, match="existing folder"):
        check_output_path(tmp_path)
    with pytest.raises(TypeError, match="Received: path=3"):
        check_output_path(3)
    assert sorted(os.listdir(tmp_path)) == ["file"]
