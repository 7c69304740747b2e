"""What one run of `oneshot.prune` did: per layer and per block, and a bar.

`OneShotSummary` holds, for every pruned kernel, its exact sparsity, its
reconstruction error on the calibration inputs it saw and the seconds its
pruning took, and for every block the seconds of its capture and pruning.
`print(summary)` shows it as a table; `summary.to_dict()` is JSON-ready.
`progress_bar` is the per-block bar (rich) `prune(verbose=...)` shows.
"""

import contextlib
import dataclasses
import math

import keras
from keras import ops

VERBOSE_VALUES = ("auto", True, False, 0, 1)


@dataclasses.dataclass(frozen=True)
class LayerResult:
    """One pruned kernel in a `OneShotSummary`.

    `shape` is the kernel read as `(d_out, d_in)`; `sparsity` is the share
    of exact zeros in it after pruning, `target_sparsity` what its block
    was asked for. `reconstruction_error` is `||W X - W' X|| / ||W X||`
    (Frobenius norms) over the calibration inputs `X` the layer saw during
    the run (after the already pruned blocks before it), `W` the kernel
    before and `W'` after pruning; None when pruned without data.

    Example: `[r.reconstruction_error for r in summary.layers]`
    """

    layer: str
    block: str
    shape: tuple
    num_parameters: int
    num_nonzeros: int
    sparsity: float
    target_sparsity: float
    reconstruction_error: float | None
    seconds: float


@dataclasses.dataclass(frozen=True)
class BlockResult:
    """One block in a `OneShotSummary`: its layers' count, the sparsity it
    was given (OWL gives blocks different ones) and the seconds spent on
    it, capturing its inputs (a partial forward pass) and pruning.

    Example: `max(summary.blocks, key=lambda b: b.seconds)`
    """

    block: str
    num_layers: int
    target_sparsity: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class OneShotSummary:
    """What `oneshot.prune(..., return_summary=True)` did, layer by layer.

    `layers` holds a `LayerResult` per pruned kernel and `blocks` a
    `BlockResult` per block, both in pruning order; `seconds` is the whole
    run's wall time. `print(summary)` prints a table.

    Example:

    ```python
    pruned, summary = oneshot.prune(model, batches, return_summary=True)
    print(summary)
    worst = max(summary.layers, key=lambda r: r.reconstruction_error)
    ```
    """

    method: str
    sparsity_m_by_n: tuple | None
    layers: tuple
    blocks: tuple
    seconds: float

    @property
    def sparsity(self):
        """Share of exact zeros over all pruned kernels together."""
        total = sum(r.num_parameters for r in self.layers)
        kept = sum(r.num_nonzeros for r in self.layers)
        return 1.0 - kept / total if total else 0.0

    def to_dict(self):
        """The summary as JSON-ready dicts and lists, `sparsity` added."""
        data = dataclasses.asdict(self)
        data["sparsity"] = self.sparsity
        return data

    def table(self):
        """The per-layer table as text (what `str(summary)` returns)."""
        pattern = (
            f"{self.sparsity_m_by_n[0]}:{self.sparsity_m_by_n[1]}"
            if self.sparsity_m_by_n
            else "unstructured"
        )
        header = ("layer", "block", "shape", "sparsity", "target", "error",
                  "seconds")
        rows = [header]
        for r in self.layers:
            error = (
                "-"
                if r.reconstruction_error is None
                else f"{r.reconstruction_error:.4f}"
            )
            rows.append((
                r.layer,
                r.block,
                "x".join(str(d) for d in r.shape),
                f"{r.sparsity:.4f}",
                f"{r.target_sparsity:.4f}",
                error,
                f"{r.seconds:.3f}",
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            f"One-shot {self.method} ({pattern}): {len(self.layers)} "
            f"kernels in {len(self.blocks)} blocks, sparsity "
            f"{self.sparsity:.4f}, {self.seconds:.2f} s",
        ]
        for index, row in enumerate(rows):
            cells = [
                cell.ljust(width) if column < 3 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths))
            ]
            lines.append("  ".join(cells).rstrip())
            if index == 0:
                lines.append("  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def reconstruction_error(weight, pruned, hessian):
    """`||W X - W' X|| / ||W X||` from `H = X^T X`, as a Python float.

    With rows `x` of `X`, `||D X||^2 = sum(D H * D)` for `D = W - W'`.

    Args:
        weight: Float `(d_out, d_in)`, the kernel before pruning.
        pruned: Float `(d_out, d_in)`, after.
        hessian: Float `(d_in, d_in)`, `X^T X` over the layer's inputs.

    Example: `reconstruction_error(w, w * keep, ops.matmul(x.T, x))`
    """
    weight = ops.cast(weight, "float32")
    hessian = ops.cast(hessian, "float32")
    delta = weight - ops.cast(pruned, "float32")
    lost = ops.sum(ops.matmul(delta, hessian) * delta)
    total = ops.sum(ops.matmul(weight, hessian) * weight)
    lost = max(float(ops.convert_to_numpy(lost)), 0.0)
    total = float(ops.convert_to_numpy(total))
    if total <= 0.0:
        return 0.0 if lost == 0.0 else math.inf
    return math.sqrt(lost / total)


def check_verbose(verbose):
    """Raises for a `verbose` that is not "auto", True/False or 0/1."""
    if not any(
        verbose is value or (type(verbose) is int and verbose == value)
        for value in VERBOSE_VALUES
    ):
        raise ValueError(
            "Argument `verbose` must be 'auto' (a progress bar when the "
            "output is a terminal or a notebook), True/1 or False/0. "
            f"Received: verbose={verbose!r}"
        )


@contextlib.contextmanager
def progress_bar(verbose, num_blocks, title):
    """A rich progress bar over the blocks; yields `advance(block_name)`.

    Shown for `verbose` True/1, hidden for False/0; with "auto", shown
    when Keras' interactive logging is on and rich finds a terminal or a
    notebook (as `fit(verbose="auto")` shows its bar).
    """
    from rich import progress

    console = progress.Console(stderr=True)
    if verbose == "auto":
        show = keras.config.is_interactive_logging_enabled() and (
            console.is_terminal or console.is_jupyter
        )
    else:
        show = bool(verbose)
    bar = progress.Progress(
        progress.TextColumn("{task.description}"),
        progress.BarColumn(),
        progress.MofNCompleteColumn(),
        progress.TimeElapsedColumn(),
        progress.TextColumn("{task.fields[block]}"),
        console=console,
        disable=not show,
    )
    with bar:
        task = bar.add_task(title, total=num_blocks, block="")

        def advance(block_name):
            bar.update(task, advance=1, block=block_name)

        yield advance
