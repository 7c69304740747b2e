"""A training process killed with SIGKILL mid-epoch and restarted from its
checkpoint ends exactly where an uninterrupted run ends.

`kill_resume_fit.py` trains a pruned MLP (CPU, fixed seed, `shuffle=False`,
24 steps, masks changing up to step 20) with `BackupAndRestore` and
`ModelCheckpoint`, and SIGKILLs itself after step 12, in the second epoch;
one more process resumes (i) with `BackupAndRestore` and (ii) from the
newest `.keras` file through `load_model`. Both restart at the end of the
first epoch (step 8: masks part way, Adam's slots, criterion scores and
SET counters, the step), so a checkpoint that lost any of them would end
elsewhere. The comparison is exact: the same ops on the same CPU in the
same order give the same bits. Two variants (see `kill_resume_fit.py`):
TFMOT's magnitude workflow, and layers under the movement criterion and
SET (whose random stream must not depend on the kernel's path, which
loading changes: it did until this test found it).

`BackupAndRestore(save_freq=<int>)` is not covered: Keras restores its
mid-epoch weights but replays that epoch from its first batch, so no
library can end where the uninterrupted run does.
"""

import os
import signal
import subprocess
import sys

import kill_resume_fit
import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "kill_resume_fit.py")

pytestmark = pytest.mark.slow


def start(*args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, SCRIPT, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process):
    """`(returncode, end of stderr)` of a started script."""
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr[-3000:]


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    """Each variant killed in a process of its own (side by side), then
    all resumed in one more."""
    directory = os.fspath(tmp_path_factory.mktemp("kill_resume"))
    kills = [
        start("kill", directory, variant)
        for variant in kill_resume_fit.VARIANTS
    ]
    for process in kills:
        returncode, stderr = finish(process)
        assert returncode == -signal.SIGKILL, stderr
    returncode, stderr = finish(
        start("resume", directory, *kill_resume_fit.VARIANTS)
    )
    assert returncode == 0, stderr
    return directory


@pytest.fixture(scope="module")
def straight():
    """The uninterrupted runs, in this process."""
    return {
        v: kill_resume_fit.train_straight(v) for v in kill_resume_fit.VARIANTS
    }


def resumed(directory, variant):
    return dict(np.load(os.path.join(directory, variant, "resumed.npz")))


@pytest.mark.parametrize("variant", kill_resume_fit.VARIANTS)
def test_the_kill_came_mid_run_after_one_epoch_was_saved(directory, variant):
    assert os.path.exists(os.path.join(directory, variant, "killed.json"))
    checkpoints = os.listdir(os.path.join(directory, variant, "ckpt"))
    assert checkpoints == ["epoch_1.keras"]
    assert int(resumed(directory, variant)["checkpoint_epoch"]) == 1


@pytest.mark.parametrize(
    "variant, how",
    [
        ("magnitude", "backup"),
        ("magnitude", "checkpoint"),
        ("movement_set", "backup"),
        ("movement_set", "checkpoint"),
    ],
)
def test_resumed_run_ends_with_the_uninterrupted_masks_and_weights(
    directory, straight, variant, how
):
    expected = straight[variant]
    result = {
        name[len(how) + 1 :]: value
        for name, value in resumed(directory, variant).items()
        if name.startswith(how + "/")
    }
    assert int(expected["iterations"]) == 24
    # Two epochs run after the restart: resumed, not started over.
    assert int(result["epochs_run"]) == 2
    assert int(result["iterations"]) == 24
    for index in range(2):
        mask = expected[f"mask{index}"]
        assert mask.mean() == pytest.approx(0.2, abs=0.01)  # at 80 %
        np.testing.assert_array_equal(
            result[f"mask{index}"], mask, err_msg=f"mask{index}"
        )
    weights = sorted(k for k in expected if k.startswith("weight"))
    assert len(weights) >= 6  # 2 kernels, 2 biases, 2 masks
    for name in weights + ["kernel0", "kernel1"]:
        np.testing.assert_array_equal(
            result[name], expected[name], err_msg=name
        )
