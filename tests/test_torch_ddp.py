"""`examples/torch_ddp.py` under `torchrun`: 2 CPU processes, gloo.

Each rank trains on half of every global batch and averages gradients
with `all_reduce`; the test checks that every rank ends with the same
masks and weights, and that they are those of one process trained on the
whole global batches (run here, in the test's process). Masks must match
exactly; weights to float rounding only, since a mean of two half-batch
gradient means and one full-batch mean add in different orders.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import backend

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "torch_ddp.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        backend() != "torch", reason="torch.distributed: PyTorch backend only"
    ),
]


def load_example():
    spec = importlib.util.spec_from_file_location("torch_ddp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    out = tmp_path / "ddp.npz"
    env = dict(os.environ, KERAS_BACKEND="torch", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(EXAMPLE),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ranks = [dict(np.load(tmp_path / f"ddp.rank{r}.npz")) for r in range(2)]
    example = load_example()
    single = example.masks_and_weights(example.train())
    assert sorted(single) == ["kernel0", "kernel1", "mask0", "mask1"]
    for name, expected in single.items():
        # Every rank holds the same bits: identical updates everywhere.
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], name)
        if name.startswith("mask"):
            assert expected.mean() == pytest.approx(0.2, abs=0.01)
            np.testing.assert_array_equal(ranks[0][name], expected, name)
        else:
            np.testing.assert_allclose(
                ranks[0][name], expected, rtol=1e-5, atol=1e-6, err_msg=name
            )
            assert np.all(ranks[0][name][single["mask" + name[-1]] == 0] == 0)
