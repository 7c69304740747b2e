"""Cost of attaching pruning to a KerasHub backbone: copy vs in place.

`prune_low_magnitude(model)` rebuilds a copy of the model and wraps every
prunable layer; `prune_low_magnitude(model, inplace=True)` wraps the
model's own layers. Both add one float32 mask per pruned weight. This
script measures, for a GPT-2 backbone built from a config (no download),
each way's wall time and the peak resident memory it adds, side by side
with the model's own size (its weights in bytes) and the time to build
the model, and prints the ratios.

Model: `GPT2Backbone(vocabulary_size=8192, num_layers=6, num_heads=8,
hidden_dim=512, intermediate_dim=2048, max_sequence_length=256)`:
23.2M parameters, 93.0 MB in float32.

Method: one fresh process per backend and per way (Keras fixes the backend
per process, and a process's peak memory only grows). The child builds
the model, runs it once, resets the kernel's peak-RSS counter
(`/proc/self/clear_refs`), then attaches pruning and reads `VmHWM` (peak)
against the RSS before; time is `time.perf_counter` around the call.

Usage (from the repository root):

```
.venv/bin/python benchmarks/bench_attach.py            # all backends
.venv/bin/python benchmarks/bench_attach.py --quick    # jax only
.venv/bin/python benchmarks/bench_attach.py --out results/bench_attach.md
```
"""

import argparse
import sys
import time
from pathlib import Path

from backend_runs import print_result
from backend_runs import run_child
from provenance import machine
from provenance import revision

BACKENDS = ("jax", "tensorflow", "torch")
WAYS = ("copy", "inplace")
CONFIG = dict(
    vocabulary_size=8192,
    num_layers=6,
    num_heads=8,
    hidden_dim=512,
    intermediate_dim=2048,
    max_sequence_length=256,
    dropout=0.0,
)


def _status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(way):
    import keras
    import keras_hub
    import numpy as np

    import keras_sparsity as sparsity

    start = time.perf_counter()
    model = keras_hub.models.GPT2Backbone(**CONFIG)
    build_seconds = time.perf_counter() - start
    batch = {
        "token_ids": np.ones((1, 16), "int32"),
        "padding_mask": np.ones((1, 16), "int32"),
    }
    model(batch)
    model_bytes = sum(
        int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
        for w in model.weights
    )
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    pruned = sparsity.prune_low_magnitude(model, inplace=way == "inplace")
    seconds = time.perf_counter() - start
    added = (_status_kib("VmHWM") - before) * 1024
    masks = sum(
        int(np.prod(m.shape)) * 4
        for w in sparsity.walk.pruning_wrappers(pruned)
        for m in w.masks
    )
    pruned(batch)
    print_result(
        {
            "backend": keras.backend.backend(),
            "way": way,
            "model_bytes": model_bytes,
            "mask_bytes": masks,
            "build_seconds": build_seconds,
            "seconds": seconds,
            "added_peak_bytes": added,
        }
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, action="append")
    parser.add_argument("--quick", action="store_true", help="jax only")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    rows = []
    backends = args.backend or (["jax"] if args.quick else BACKENDS)
    for backend in backends:
        for way in WAYS:
            command = [sys.executable, __file__, "--child", way]
            rows.extend(run_child(command, backend))
    mb = 1e6
    lines = [
        f"Revision {revision()}; {machine()}",
        "",
        "| backend | way | model MB | masks MB | time s (build s) "
        "| added peak MB | added / model |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['backend']} | {row['way']} "
            f"| {row['model_bytes'] / mb:.1f} | {row['mask_bytes'] / mb:.1f} "
            f"| {row['seconds']:.2f} ({row['build_seconds']:.2f}) "
            f"| {row['added_peak_bytes'] / mb:.1f} "
            f"| {row['added_peak_bytes'] / row['model_bytes']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
