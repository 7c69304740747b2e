"""The `keras-sparsity` command: `keras-sparsity report PATH`.

Usage:

```sh
keras-sparsity report model.keras             # weights, totals, runtimes
keras-sparsity report model.sparse --json     # the same data as JSON
keras-sparsity report model.keras --plot m.png  # and a figure ([plot])
python -m keras_sparsity report model.keras   # without the script
```

PATH is a `.keras` file (pruned models load as they are), a file written
by `save_compressed` (recognised by its content), or a `.tflite` file
(from `export_litert`: its tensors and which of them stayed sparse). Bad
paths and unreadable files end with a one-line error and exit status 2.
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import zipfile

import keras
from rich.console import Console
from rich.table import Table

from keras_sparsity import compressed
from keras_sparsity import litert
from keras_sparsity.report import density_maps
from keras_sparsity.report import report

_PROG = "keras-sparsity"
_LITERT_SUFFIX = ".tflite"
# The manifest that marks a `save_compressed` file (a zip archive).
_COMPRESSED_MANIFEST = "compressed.json"
_MAX_HEAT_MAPS = 12


class _UsageError(Exception):
    """A problem with the command line or its files: exit status 2."""


def main(argv=None):
    """Runs `keras-sparsity` with `argv` (default: `sys.argv[1:]`).

    Returns the exit status: 0 on success, 2 for bad arguments or a file
    that cannot be read or written.

    Example: `main(["report", "model.keras", "--json"])`
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.path.lower().endswith(_LITERT_SUFFIX):
            return _report_litert(args)
        if args.plot:
            _check_plot_path(args.plot)
        model = load_model(args.path)
        result = report(model, sizes=args.sizes)
        if args.json:
            print(json.dumps(result.to_dict(), indent=2))
        else:
            _render(result, args.path)
        if args.plot:
            _plot(result, model, args.plot)
    except _UsageError as error:
        print(f"{_PROG} report: error: {error}", file=sys.stderr)
        return 2
    return 0


def _report_litert(args):
    """Lists a `.tflite` file's constant tensors and which stayed sparse."""
    if args.plot:
        raise _UsageError("--plot needs a .keras or compressed file")
    if not os.path.isfile(args.path):
        raise _UsageError(f"{args.path}: no such file")
    try:
        info = litert.describe_litert(args.path)
    except Exception as error:  # any failure to read a user's file
        message = " ".join(str(error).split()) or type(error).__name__
        raise _UsageError(f"cannot read {args.path}: {message}") from error
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    table = Table(title=f"{args.path}: {info['bytes']:,} bytes")
    for column in ("tensor", "shape", "stored", "blocks", "values"):
        table.add_column(column)
    for tensor in info["tensors"]:
        if not tensor["sparse"]:
            stored = "dense"
        elif tensor["densified"]:
            stored = "densified"  # sparse in the file, DENSIFY at load
        else:
            stored = "sparse"
        table.add_row(
            tensor["name"],
            str(tuple(tensor["shape"])),
            stored,
            str(tensor["block_size"] or ""),
            f"{tensor['stored_values']:,}",
        )
    console = Console()
    console.print(table)
    console.print("ops: " + ", ".join(info["ops"]))
    console.print(
        "sparse: runs on a sparse kernel; densified: stored sparse, made "
        "dense by a DENSIFY op when the model loads"
    )
    return 0


def _parser():
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Tools for models pruned with keras-sparsity.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "report",
        help="per-weight sparsity, totals, sizes and runtime verdicts",
        description=(
            "Reports each prunable weight's sparsity and pattern, totals, "
            "file sizes, and which runtimes would run it faster."
        ),
    )
    command.add_argument(
        "path",
        metavar="PATH",
        help="a .keras file, a file written by save_compressed, or a .tflite "
        "file",
    )
    command.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON (and nothing else) on stdout",
    )
    command.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write a figure of per-weight sparsity and kernel masks",
    )
    command.add_argument(
        "--no-sizes",
        dest="sizes",
        action="store_false",
        help="skip the file sizes (which save the model three ways)",
    )
    return parser


def load_model(path):
    """Loads a model file by its content, for `keras-sparsity report`.

    A zip archive holding a `compressed.json` manifest is loaded with
    `load_compressed`, a `.keras` file with `keras.saving.load_model`.
    Raises `_UsageError` (reported as exit status 2) for a missing or
    unreadable file or another file type. New formats get a branch here.

    Example: `model = load_model("model.sparse")`
    """
    if not os.path.exists(path):
        raise _UsageError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise _UsageError(f"{path}: not a file")
    if _is_compressed(path):
        loader = compressed.load_compressed
    elif path.lower().endswith(".keras"):
        loader = keras.saving.load_model
    else:
        raise _UsageError(
            f"{path}: expected a .keras file or a file written by "
            "keras_sparsity.save_compressed"
        )
    try:
        return loader(path)
    except Exception as error:  # any failure to read a user's file
        message = " ".join(str(error).split()) or type(error).__name__
        raise _UsageError(f"cannot load {path}: {message}") from error


def _is_compressed(path):
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return _COMPRESSED_MANIFEST in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


# Tables.


def _render(result, path):
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or redirected: wide enough that no name is cut short.
        console = Console(width=120)
    table = Table(title=f"Prunable weights of {result.model} ({path})")
    names = [row.layer for row in result.rows] + ["layer"]
    table.add_column("layer", no_wrap=True, min_width=max(map(len, names)))
    table.add_column("weight", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    for name in ("params", "non-zeros", "sparsity"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("pattern", no_wrap=True)
    table.add_column("MACs dense → sparse", justify="right")
    for row in result.rows:
        table.add_row(
            row.layer,
            row.weight,
            "×".join(str(d) for d in row.shape),
            f"{row.num_parameters:,}",
            f"{row.num_nonzeros:,}",
            f"{row.sparsity:.1%}",
            row.pattern,
            _macs(row.dense_macs, row.sparse_macs),
        )
    console.print(table)
    console.print(_totals(result))
    for runtime, summary in result.runtime_summary().items():
        verdicts = [v for v in result.verdicts if v.runtime == runtime]
        table = Table(
            title=(
                f"{summary['title']}: {summary['num_faster']} of "
                f"{summary['num_weights']} weights faster "
                f"({summary['faster_mac_share']:.0%} of the MACs)"
            )
        )
        table.add_column("layer", no_wrap=True, min_width=max(map(len, names)))
        table.add_column("weight", no_wrap=True)
        table.add_column("faster", no_wrap=True)
        table.add_column("why", ratio=1)
        for verdict in verdicts:
            table.add_row(
                verdict.layer,
                verdict.weight,
                "[green]yes[/]" if verdict.faster else "[red]no[/]",
                verdict.reason,
            )
        console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def _macs(dense, sparse):
    if dense is None:
        return "unknown"
    return f"{dense:,} → {sparse:,}"


def _totals(result):
    table = Table(title="Totals", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row(
        "parameters (all weights)",
        f"{result.num_parameters:,} ({result.num_nonzeros:,} non-zero)",
    )
    table.add_row(
        "prunable weights",
        f"{result.prunable_parameters:,} ({result.prunable_nonzeros:,} "
        f"non-zero, {result.sparsity:.1%} sparse)",
    )
    table.add_row(
        "MACs per example",
        f"{result.dense_macs:,} dense, {result.sparse_macs:,} on non-zeros"
        + _ratio(result.dense_macs, result.sparse_macs, "fewer"),
    )
    sizes = result.sizes
    if sizes is not None:
        dense = sizes.dense_keras_bytes
        table.add_row(".keras file", f"{dense:,} bytes")
        for label, size in (
            ("zipped .keras (DEFLATE)", sizes.zipped_bytes),
            ("save_compressed", sizes.compressed_bytes),
            ("information bound", sizes.information_bound_bytes),
        ):
            table.add_row(label, f"{size:,} bytes" + _ratio(dense, size))
    return table


def _ratio(dense, other, word="smaller"):
    return f" ({dense / other:.2f}x {word})" if other else ""


# The figure.


def _check_plot_path(path):
    """Fails before any work if the figure could not be written."""
    if importlib.util.find_spec("matplotlib") is None:
        raise _UsageError(
            '--plot needs matplotlib: pip install "keras-sparsity[plot]"'
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise _UsageError(f"cannot write the plot {path}: no such directory")


def _plot(result, model, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = density_maps(model)[:_MAX_HEAT_MAPS]
    columns = 4
    map_rows = math.ceil(len(maps) / columns)
    figure = Figure(figsize=(12, 3.5 + 2.8 * map_rows), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(1 + map_rows, columns)
    bars = figure.add_subplot(grid[0, :])
    labels = [f"{row.layer}/{row.weight}" for row in result.rows]
    bars.bar(
        range(len(labels)),
        [100 * row.sparsity for row in result.rows],
        color=[_colour(row.pattern) for row in result.rows],
    )
    bars.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    bars.set_ylim(0, 100)
    bars.set_ylabel("sparsity (%)")
    bars.set_title(
        f"{result.model}: {result.sparsity:.1%} of prunable weights are zero"
    )
    for index, row in enumerate(result.rows):
        bars.text(
            index,
            100 * row.sparsity,
            row.pattern,
            ha="center",
            va="bottom",
            fontsize=7,
        )
    # density_maps lists the weights in the order of the report's rows.
    for index, (row, (_, _, density)) in enumerate(zip(result.rows, maps)):
        axes = figure.add_subplot(grid[1 + index // columns, index % columns])
        image = axes.imshow(
            density,
            vmin=0.0,
            vmax=1.0,
            cmap="viridis",
            aspect="auto",
            interpolation="nearest",
        )
        shape = "×".join(map(str, row.shape))
        axes.set_title(
            f"{row.layer}/{row.weight}\n{shape}, {row.pattern}", fontsize=8
        )
        axes.set_xlabel("outputs", fontsize=7)
        axes.set_ylabel("inputs (reduction axes)", fontsize=7)
        axes.tick_params(labelsize=6)
    if maps:
        figure.colorbar(
            image, ax=figure.axes[1:], label="share kept", shrink=0.8
        )
    try:
        figure.savefig(path, dpi=100)
    except (OSError, ValueError) as error:
        raise _UsageError(f"cannot write the plot {path}: {error}") from error


def _colour(pattern):
    if pattern.startswith("block"):
        return "tab:green"
    if ":" in pattern:
        return "tab:purple"
    return {"dense": "tab:grey", "empty": "black"}.get(pattern, "tab:blue")
