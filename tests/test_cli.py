import json
import os
import subprocess
import sys
import zipfile

import keras
import pytest
from conftest import backend
from conftest import compile_model
from conftest import toy_data

import keras_sparsity as sparsity
from keras_sparsity.cli import main
from keras_sparsity.report import report

L = keras.layers
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A pruned MLP trained one epoch, saved as a pruned `.keras` file and,
    stripped, as a compressed file."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((24,)),
            L.Dense(32, name="hidden_layer"),
            L.Dense(8, name="logits_layer"),
        ]
    )
    pruned = sparsity.prune_low_magnitude(
        model, sparsity.ConstantSparsity(0.8, 0)
    )
    compile_model(pruned)
    x, y = toy_data((24,), num_samples=32, num_classes=8)
    pruned.fit(x, y, batch_size=16, verbose=0)
    directory = tmp_path_factory.mktemp("cli")
    keras_path = str(directory / "pruned.keras")
    pruned.save(keras_path)
    compressed_path = str(directory / "model.sparse")
    sparsity.save_compressed(sparsity.strip_pruning(pruned), compressed_path)
    return {"model": pruned, "keras": keras_path, "sparse": compressed_path}


def run_module(*args):
    """`python -m keras_sparsity ...` in a fresh process on this backend."""
    env = dict(os.environ, KERAS_BACKEND=backend())
    env.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "keras_sparsity", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_table_for_a_pruned_keras_file(files):
    done = run_module("report", files["keras"])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for text in (
        "hidden_layer",
        "logits_layer",
        "unstructured",
        "Totals",
        "save_compressed",
        "information bound",
        "LiteRT / TFLite: 0 of 2 weights faster",
        "NVIDIA 2:4 sparse tensor cores",
        "CPU sparse kernels",
        "Structural shrinking",
        "DENSIFY",
    ):
        assert text in out, text
    assert "Traceback" not in done.stderr


def test_json_for_a_compressed_file_matches_report(files):
    done = run_module("report", files["sparse"], "--json", "--no-sizes")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    expected = report(
        sparsity.load_compressed(files["sparse"]), sizes=False
    ).to_dict()
    assert data == expected
    assert [row["num_nonzeros"] for row in data["rows"]] == [154, 51]
    assert data["prunable_nonzeros"] == 205
    assert data["dense_macs"] == 24 * 32 + 32 * 8


def test_json_for_a_pruned_keras_file_matches_the_model(files, capsys):
    assert main(["report", files["keras"], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = report(files["model"]).to_dict()
    assert data["rows"] == expected["rows"]
    assert data["verdicts"] == expected["verdicts"]
    # The same weights; the configs may differ by a few bytes, as the
    # auto-numbered names of a model loaded later can be longer.
    saved = os.path.getsize(files["sparse"])
    assert abs(data["sizes"]["compressed_bytes"] - saved) <= 16
    assert (
        data["sizes"]["information_bound_bytes"]
        == expected["sizes"]["information_bound_bytes"]
    )


def test_plot_writes_a_png(files, tmp_path, capsys):
    path = tmp_path / "report.png"
    code = main(
        ["report", files["sparse"], "--no-sizes", "--json", "--plot", str(path)]
    )
    assert code == 0
    json.loads(capsys.readouterr().out)  # stdout still holds only JSON
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000


def write(path, data):
    path.write_bytes(data)
    return str(path)


def bad_files(tmp_path):
    manifest_only = tmp_path / "bad.sparse"
    with zipfile.ZipFile(manifest_only, "w") as archive:
        archive.writestr("compressed.json", "{}")
    return {
        "missing": (str(tmp_path / "nothing.keras"), "no such file"),
        "directory": (str(tmp_path), "not a file"),
        "extension": (
            write(tmp_path / "model.h5", b"weights"),
            "expected a .keras file or a file written by",
        ),
        "corrupt": (
            write(tmp_path / "junk.keras", b"not a zip archive"),
            "cannot load",
        ),
        "compressed": (str(manifest_only), "cannot load"),
    }


@pytest.mark.parametrize(
    "kind", ["missing", "directory", "extension", "corrupt", "compressed"]
)
def test_bad_paths_exit_2_with_one_line(kind, tmp_path, capsys):
    path, message = bad_files(tmp_path)[kind]
    assert main(["report", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("keras-sparsity report: error: ")
    assert message in lines[0] and path in lines[0]


def test_unwritable_plot_fails_before_any_output(files, tmp_path, capsys):
    path = str(tmp_path / "no" / "such" / "dir" / "plot.png")
    assert main(["report", files["sparse"], "--plot", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no such directory" in captured.err and path in captured.err


def test_missing_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["report"])
    assert raised.value.code == 2
    assert "PATH" in capsys.readouterr().err
