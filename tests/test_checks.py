import pathlib

import keras
import pytest

from keras_sparsity.checks import check_built_model
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
