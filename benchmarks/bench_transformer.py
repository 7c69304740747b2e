"""Transformers shrunk by heads and feed-forward units, on every backend.

Two KerasHub backbones built from configs (no download): a GPT-2 (4
blocks, hidden 256, 8 heads, feed-forward 1024) and a Gemma 3 (4 blocks,
hidden 256, 8 query and 4 key/value heads of 32, feed-forward 1024).
`prune_channels` at 50 % (one update, so the masks are those of the
initial weights), `strip_pruning`, then `shrink`: the GPT-2 loses half its
feed-forward units (its config cannot describe fewer heads), the Gemma 3
half its units and half its key/value heads with their query heads. Each
backend runs in its own process and times `predict_on_batch` of the masked
model and of the shrunk one, alternating, on 8 sequences of 128 tokens;
the shrunk model's outputs are checked against the masked one's.

    python benchmarks/bench_transformer.py [--backends jax torch] [--quick]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backend_runs import print_result  # noqa: E402
from backend_runs import run_child  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")
SEQUENCE, BATCH, VOCABULARY = 128, 8, 1000


def build(keras_hub, name):
    common = dict(vocabulary_size=VOCABULARY, num_layers=4, hidden_dim=256,
                  intermediate_dim=1024)
    if name == "gpt2":
        return keras_hub.models.GPT2Backbone(
            num_heads=8, dropout=0.0, max_sequence_length=SEQUENCE, **common
        )
    return keras_hub.models.Gemma3Backbone(
        image_size=16, num_query_heads=8, num_key_value_heads=4,
        head_dim=32, **common,
    )


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "token_ids": rng.integers(1, VOCABULARY, (BATCH, SEQUENCE)).astype(
            "int32"
        ),
        "padding_mask": np.ones((BATCH, SEQUENCE), "int32"),
    }


def sequence_output(result):
    return result["sequence_output"] if isinstance(result, dict) else result


def child(args):
    import keras
    import keras_hub

    import keras_sparsity as sparsity

    keras.utils.set_random_seed(0)
    x = batch()
    for name in ("gpt2", "gemma3"):
        model = build(keras_hub, name)
        pruned = sparsity.prune_channels(
            model, sparsity.ConstantSparsity(0.5, begin_step=0)
        )
        pruned.compile(keras.optimizers.SGD(0.0), "mse")
        target = keras.tree.map_structure(
            keras.ops.convert_to_numpy, pruned(x)
        )
        pruned.fit(x, target, batch_size=BATCH, epochs=1, verbose=0)
        masked = sparsity.strip_pruning(pruned)
        smaller, plan = sparsity.shrink(masked, return_plan=True)
        error = float(np.abs(
            keras.ops.convert_to_numpy(sequence_output(smaller(x)))
            - keras.ops.convert_to_numpy(sequence_output(masked(x)))
        ).max())
        for m in (masked, smaller):
            for _ in range(3):
                m.predict_on_batch(x)
        times = [[], []]
        for _ in range(args.repeats):
            for found, m in zip(times, (masked, smaller)):
                start = time.perf_counter()
                m.predict_on_batch(x)
                found.append(time.perf_counter() - start)
        print_result(dict(
            backend=keras.backend.backend(), model=name,
            params=masked.count_params(), params_after=smaller.count_params(),
            heads_removed=plan.num_heads_removed,
            units_removed=plan.num_units_removed, max_error=error,
            dense_ms=1000 * float(np.median(times[0])),
            shrunk_ms=1000 * float(np.median(times[1])),
        ))


def markdown(results):
    lines = [
        f"Transformers at half their feed-forward units (and heads where "
        f"the config allows), batch {BATCH} x {SEQUENCE} tokens, median "
        "`predict_on_batch`:",
        "",
        "| backend | model | params | heads cut | units cut | masked ms | "
        "shrunk ms | speed-up | max abs error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['model']} | {r['params']:,} -> "
            f"{r['params_after']:,} | {r['heads_removed']} | "
            f"{r['units_removed']} | {r['dense_ms']:.1f} | "
            f"{r['shrunk_ms']:.1f} | {r['dense_ms'] / r['shrunk_ms']:.2f}x | "
            f"{r['max_error']:.1e} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS,
                        default=list(BACKENDS))
    parser.add_argument("--quick", action="store_true",
                        help="5 timed calls instead of 30")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 30)
    if args.child:
        return child(args)
    results = []
    for backend in args.backends:
        results += run_child(
            [sys.executable, __file__, "--child", "--repeats",
             str(args.repeats)],
            backend,
        )
    text = markdown(results)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
