"""`PruningSummaries` writes exact sparsity scalars that TensorBoard reads.

The event files are parsed back record by record, so a step written twice
or a value rounded on the way would show.
"""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import backend
from conftest import build_simple_dense_model
from conftest import compile_model
from conftest import pruned_pairs
from conftest import sync
from conftest import toy_data

import keras_sparsity as sparsity

# Sparsity rises every step from 0 to 0.5 at step 4: PD(0, 0.5, 0, 4, power 3)
# gives 0.4375 at step 2 and 0.4921875 at step 3.
SCHEDULE = sparsity.PolynomialDecay(
    0.0, 0.5, begin_step=0, end_step=4, frequency=1
)


def read_scalars(log_dir):
    """{tag: [(step, value), ...]} in the order written, from every file."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.compat.proto import event_pb2

    metrics = pathlib.Path(log_dir) / "metrics"
    scalars = {}
    for path in sorted(metrics.iterdir()):
        loader = event_file_loader.RawEventFileLoader(str(path))
        for record in loader.Load():
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(
                    (event.step, value.simple_value)
                )
    return scalars


def steps_of(scalars):
    """The logged steps, asserting every tag was logged at the same ones."""
    steps = {tag: [s for s, _ in points] for tag, points in scalars.items()}
    first = next(iter(steps.values()))
    assert all(s == first for s in steps.values()), steps
    return first


class Snapshots(keras.callbacks.Callback):
    """Records (wrapper name, weight, mask) of every pruned weight per step."""

    def __init__(self):
        super().__init__()
        self.at_step = {}

    def on_train_batch_end(self, batch, logs=None):
        sync(self.model)
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.at_step[step] = [
            (wrapper.name, weight, mask)
            for wrapper, weight, mask in pruned_pairs(self.model)
        ]


def fit_pruned(
    log_dir, update_freq="epoch", base=None, num_samples=24, **compile_kwargs
):
    """2 epochs of batches of 8; with 24 samples optimizer steps 1 to 6."""
    model = sparsity.prune_low_magnitude(
        base or build_simple_dense_model(), pruning_schedule=SCHEDULE
    )
    compile_model(model, **compile_kwargs)
    snapshots = Snapshots()
    x, y = toy_data(num_samples=num_samples)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[
            sparsity.PruningSummaries(log_dir, update_freq=update_freq),
            snapshots,
        ],
    )
    return model, snapshots


def f32(x):
    """What a float becomes in the event file (`simple_value` is float32)."""
    return float(np.float32(x))


def test_tags_name_each_pruned_weight_by_wrapper_and_weight(tmp_path):
    base = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(5, name="logits"),
        ]
    )
    fit_pruned(tmp_path, base=base)
    assert set(read_scalars(tmp_path)) == {
        "global_sparsity",
        "prune_low_magnitude_hidden/target_sparsity",
        "prune_low_magnitude_hidden/kernel/sparsity",
        "prune_low_magnitude_hidden/kernel/threshold",
        "prune_low_magnitude_logits/target_sparsity",
        "prune_low_magnitude_logits/kernel/sparsity",
        "prune_low_magnitude_logits/kernel/threshold",
    }


@pytest.mark.parametrize(
    "update_freq, steps",
    [
        ("epoch", [3, 6]),
        ("batch", [1, 2, 3, 4, 5, 6]),
        (2, [2, 4, 6]),
        # Step 6 is no multiple of 4, but the end of training is logged.
        (4, [4, 6]),
    ],
)
def test_logs_at_update_freq_and_always_at_the_end_never_twice(
    tmp_path, update_freq, steps
):
    fit_pruned(tmp_path, update_freq=update_freq)
    assert steps_of(read_scalars(tmp_path)) == steps


@pytest.mark.skipif(
    backend() == "torch",
    reason="Keras: `steps_per_execution` must be 1 with the PyTorch backend",
)
def test_integer_update_freq_counts_steps_with_steps_per_execution(tmp_path):
    # 2 epochs of 4 batches, 2 per call: batch ends come at steps 2, 4, 6
    # and 8. Multiples of 3 are crossed at 4 (past 3) and 6; 8 ends training.
    fit_pruned(tmp_path, update_freq=3, num_samples=32, steps_per_execution=2)
    assert steps_of(read_scalars(tmp_path)) == [4, 6, 8]


def test_values_are_the_masks_sparsity_threshold_and_schedule(tmp_path):
    model, snapshots = fit_pruned(tmp_path, update_freq="batch")
    scalars = read_scalars(tmp_path)
    for step in range(1, 7):
        target = f32(keras.ops.convert_to_numpy(SCHEDULE(step)[1]))
        zeros = 0
        for name, weight, mask in snapshots.at_step[step]:
            kept = mask > 0
            zeros += mask.size - kept.sum()
            expected = {
                "target_sparsity": target,
                "kernel/sparsity": f32((mask.size - kept.sum()) / mask.size),
                "kernel/threshold": f32(np.abs(weight[kept]).min()),
            }
            for suffix, value in expected.items():
                assert scalars[f"{name}/{suffix}"][step - 1] == (step, value)
        assert scalars["global_sparsity"][step - 1] == (step, f32(zeros / 120))
    # The masks at step 3 were set by the update at step 2 (to 0.4375):
    # 45 of 80 and 22 of 40 weights kept (22.5 rounds to even).
    dense, dense_1 = sparsity.walk.pruning_wrappers(model)
    assert scalars[f"{dense.name}/kernel/sparsity"][2] == (3, 0.4375)
    assert scalars[f"{dense_1.name}/kernel/sparsity"][2] == (3, f32(0.45))
    assert scalars[f"{dense.name}/target_sparsity"][2] == (3, 0.4921875)
    # The update at step 4 reached 0.5 for good.
    assert scalars[f"{dense.name}/target_sparsity"][5] == (6, 0.5)
    assert scalars["global_sparsity"][5] == (6, 0.5)


def test_threshold_is_zero_and_sparsity_one_when_every_weight_is_pruned(
    tmp_path,
):
    model = sparsity.prune_low_magnitude(
        build_simple_dense_model(), pruning_schedule=SCHEDULE
    )
    first, second = sparsity.walk.pruning_wrappers(model)
    first.masks[0].assign(np.zeros((10, 8), "float32"))
    summaries = sparsity.PruningSummaries(tmp_path)
    summaries.set_model(model)
    summaries.log(step=7)
    summaries.close()
    scalars = read_scalars(tmp_path)
    kernel = keras.ops.convert_to_numpy(second.pruned_weights[0])
    assert scalars[f"{first.name}/kernel/sparsity"] == [(7, 1.0)]
    assert scalars[f"{first.name}/kernel/threshold"] == [(7, 0.0)]
    assert scalars[f"{second.name}/kernel/sparsity"] == [(7, 0.0)]
    assert scalars[f"{second.name}/kernel/threshold"] == [
        (7, f32(np.abs(kernel).min()))
    ]
    assert scalars["global_sparsity"] == [(7, f32(80 / 120))]


def test_custom_loop_logs_with_set_model_log_and_close(tmp_path):
    model = compile_model(
        sparsity.prune_low_magnitude(
            build_simple_dense_model(), pruning_schedule=SCHEDULE
        )
    )
    summaries = sparsity.PruningSummaries(tmp_path)
    summaries.set_model(model)
    x, y = toy_data(num_samples=8)
    for _ in range(3):
        model.train_on_batch(x, y)
    summaries.log()
    summaries.log()  # Same step: not written again.
    for _ in range(2):
        model.train_on_batch(x, y)
    summaries.log()
    summaries.close()
    scalars = read_scalars(tmp_path)
    assert steps_of(scalars) == [3, 5]
    # The update at step 4 (the 5th) reached the final sparsity.
    assert scalars["global_sparsity"][1] == (5, 0.5)


def test_log_without_an_optimizer_needs_the_step(tmp_path):
    model = sparsity.prune_low_magnitude(build_simple_dense_model())
    summaries = sparsity.PruningSummaries(tmp_path)
    with pytest.raises(ValueError, match="has no model"):
        summaries.log(step=1)
    summaries.set_model(model)
    with pytest.raises(ValueError, match="no optimizer.*log\\(step="):
        summaries.log()
    summaries.log(step=keras.Variable(5, dtype="int32", trainable=False))
    summaries.close()
    assert steps_of(read_scalars(tmp_path)) == [5]


def test_warns_when_the_model_has_no_pruned_layers(tmp_path):
    model = compile_model(build_simple_dense_model())
    with pytest.warns(UserWarning, match="no pruned layers"):
        model.fit(
            *toy_data(num_samples=8),
            verbose=0,
            callbacks=[sparsity.PruningSummaries(tmp_path)],
        )
    assert not (tmp_path / "metrics").exists()


@pytest.mark.parametrize("log_dir", ["", None, object(), b"logs", 3])
def test_rejects_a_log_dir_that_is_not_a_path(log_dir):
    with pytest.raises(ValueError, match="`log_dir`") as info:
        sparsity.PruningSummaries(log_dir)
    assert str(info.value).endswith(f"Received: log_dir={log_dir!r}")


@pytest.mark.parametrize(
    "relative, file",
    [
        ("log.txt", "log.txt"),
        ("log.txt/run1", "log.txt"),
        ("run", "run/metrics"),
    ],
)
def test_rejects_a_log_dir_under_an_existing_file(tmp_path, relative, file):
    # Used to be accepted, then fail with a FailedPreconditionError at the end
    # of the first epoch.
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text("not a directory")
    log_dir = tmp_path / relative
    with pytest.raises(ValueError, match="`log_dir`") as info:
        sparsity.PruningSummaries(log_dir)
    message = str(info.value)
    assert repr(str(tmp_path / file)) in message
    assert message.endswith(f"Received: log_dir={log_dir!r}")


def test_creates_a_missing_nested_log_dir(tmp_path):
    log_dir = tmp_path / "a" / "b"
    fit_pruned(str(log_dir))
    assert steps_of(read_scalars(log_dir)) == [3, 6]


@pytest.mark.parametrize("update_freq", [0, -2, "step", "Epoch", 1.5, True])
def test_rejects_a_bad_update_freq(tmp_path, update_freq):
    with pytest.raises(ValueError, match="`update_freq`") as info:
        sparsity.PruningSummaries(tmp_path, update_freq=update_freq)
    assert str(info.value).endswith(f"Received: update_freq={update_freq!r}")


def test_rejects_unknown_keyword_arguments(tmp_path):
    with pytest.raises(TypeError, match="histogram_freq.*TensorBoard"):
        sparsity.PruningSummaries(tmp_path, histogram_freq=1)


def test_missing_tensorboard_fails_with_an_install_hint(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.startswith("tensorboard")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(
        ImportError, match=re.escape("pip install keras-sparsity[tensorboard]")
    ):
        sparsity.PruningSummaries(tmp_path)


def test_docstring_example_runs(tmp_path, monkeypatch):
    doc = sparsity.PruningSummaries.__doc__
    example = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(textwrap.dedent(example), {})
    scalars = read_scalars(tmp_path / "logs" / "pruning")
    assert steps_of(scalars) == [4, 8]
    assert scalars["global_sparsity"][-1] == (8, f32(0.8))


NO_TENSORFLOW_SCRIPT = """
import os
import sys

sys.modules["tensorflow"] = None  # Any `import tensorflow` now fails.
if os.environ["KERAS_BACKEND"] == "torch":
    import torch
import keras
import numpy as np

import keras_sparsity as sparsity

model = sparsity.prune_low_magnitude(
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)]),
    pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0))
model.compile(optimizer="sgd", loss="mse")
model.fit(np.ones((4, 4)), np.ones((4, 4)), verbose=0,
          callbacks=[sparsity.PruningSummaries(sys.argv[1])])
assert sys.modules["tensorflow"] is None
"""


@pytest.mark.skipif(
    backend() == "tensorflow", reason="the TensorFlow backend needs TensorFlow"
)
def test_writes_event_files_when_tensorflow_cannot_be_imported(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": backend()},
    )
    assert result.returncode == 0, result.stderr
    assert read_scalars(tmp_path)["global_sparsity"] == [(1, 0.5)]
