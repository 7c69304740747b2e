import os

import pytest

from keras_sparsity.files import replacing

# File formats and shape arithmetic: no backend code runs.
pytestmark = pytest.mark.backend_independent


def test_the_file_is_replaced_with_new_file_permissions(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    with replacing(path) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path)
        with open(temporary, "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.tflite"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="converter"):
        with replacing(path, suffix=".tflite") as temporary:
            assert temporary.endswith(".tflite")
            with open(temporary, "wb") as f:
                f.write(b"half")
            raise RuntimeError("converter failed")
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.tflite"]
