"""One process per Keras backend: Keras picks its backend once per process.

A script measures a backend by running itself again with `KERAS_BACKEND`
set (`run_child`); the child prints each result as one line with
`print_result`, which the parent reads back as JSON. Imported by the
scripts in this folder (run as `python benchmarks/<x>.py`).
"""

import json
import os
import subprocess

_PREFIX = "RESULT "


def print_result(result):
    """Prints `result` (a JSON-serialisable dict) for the parent to read."""
    print(_PREFIX + json.dumps(result), flush=True)


def run_child(command, backend):
    """Runs `command` under `KERAS_BACKEND=backend`; returns its results.

    The child's other output passes through; a failure raises
    `RuntimeError`.
    """
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        command, env=env, stdout=subprocess.PIPE, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"The {backend} run failed with exit code {completed.returncode}."
        )
    return [
        json.loads(line[len(_PREFIX) :])
        for line in completed.stdout.splitlines()
        if line.startswith(_PREFIX)
    ]
