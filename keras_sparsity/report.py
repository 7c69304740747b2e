"""`report(model)`: how sparse each kernel is, and what that sparsity buys.

One row per prunable weight (the weights `prune_low_magnitude` masks), read
as `strip_pruning` would leave it (`weight * mask` for pruned layers): its
shape, parameters, non-zeros, the pattern of its zeros, and the
multiply-accumulates it costs per example, dense and skipping zeros. Then
totals, file sizes, and per runtime which weights it would run faster and
why not the others (`keras_sparsity.runtimes`). The result is plain data:
frozen dataclasses with a JSON-ready `to_dict()`; the command
`keras-sparsity report PATH` renders it.

Patterns are found in the kernel's canonical 2-D layout, rows over the
reduction (input) axes and columns over the output axes, as `block_size`
and `sparsity_m_by_n` read kernels.
"""

import dataclasses
import math
import os
import tempfile
import zipfile

import keras
import numpy as np

from keras_sparsity import _compat
from keras_sparsity import compressed
from keras_sparsity import macs
from keras_sparsity import registry
from keras_sparsity import runtimes
from keras_sparsity.checks import check_built_model
from keras_sparsity.oneshot import quantization
from keras_sparsity.walk import pruning_wrappers
from keras_sparsity.wrapper import PruneLowMagnitude

L = keras.layers

# Block heights and widths tried, and N:M groups (n kept of m), strictest
# first: the lowest share kept, then the shortest group.
_BLOCK_SIDES = (2, 4, 8, 16, 32)
_N_OF_M = sorted(
    ((n, m) for m in (2, 4, 8) for n in range(1, m)),
    key=lambda nm: (nm[0] / nm[1], nm[1]),
)
# An N:M label needs this share of full groups to keep exactly n weights;
# sparser tensors that merely fit the pattern are called unstructured.
_N_OF_M_BINDING = 0.9


@dataclasses.dataclass(frozen=True)
class WeightRow:
    """One prunable weight of the model, as `report` found it.

    `pattern` is `"dense"` (no zeros), `"empty"` (all zeros), `"block RxC"`
    (the largest block, in the canonical (reduction, output) layout, whose
    every copy is all zero or all kept; `block_size=(R, C)` prunes so),
    `"n:m"` (every m consecutive weights along the last reduction axis
    keep at most n, as `sparsity_m_by_n=(m - n, m)` prunes) or
    `"unstructured"`. `block` is that largest block shape (`None` when
    dense or empty) and `groups_over_2_of_4` counts the groups of 4 along
    the last reduction axis that keep more than 2 weights. `empty_outputs`
    of `num_outputs` output columns (units, filters) and `empty_inputs` of
    `num_inputs` slices along the last reduction axis (input channels) are
    entirely zero. MACs are per example, a layer called several times
    counted once; `None` where the layer's input shape is not known.

    Example: `[(r.layer, r.pattern) for r in sparsity.report(model).rows]`
    """

    layer: str
    weight: str
    layer_type: str
    operation: str
    dtype: str
    shape: tuple
    num_parameters: int
    num_nonzeros: int
    sparsity: float
    pattern: str
    block: tuple | None
    groups_over_2_of_4: int
    empty_outputs: int
    num_outputs: int
    empty_inputs: int
    num_inputs: int
    dense_macs: int | None
    sparse_macs: int | None


@dataclasses.dataclass(frozen=True)
class Sizes:
    """File sizes in bytes of the model's weights stored four ways.

    `dense_keras_bytes`: the `.keras` file of the plain model (no
    optimizer state); `zipped_bytes`: that file zipped with DEFLATE, as
    TFMOT's tutorial measures; `compressed_bytes`: `save_compressed` with
    float32 values; `information_bound_bytes`: masks at their entropy plus
    kept float32 values (`compressed.information_bound_bytes`).

    Example: `sizes = sparsity.report(model).sizes`
    """

    dense_keras_bytes: int
    zipped_bytes: int
    compressed_bytes: int
    information_bound_bytes: int


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """What `report` returns: rows, totals, sizes and runtime verdicts.

    `num_parameters` and `num_nonzeros` count every weight of the model
    (pruning masks excluded, pruned weights masked); `prunable_*` only the
    rows. `dense_macs` and `sparse_macs` sum the rows' MACs per example.

    Example: `json.dumps(sparsity.report(model).to_dict())`
    """

    model: str
    rows: tuple
    num_parameters: int
    num_nonzeros: int
    prunable_parameters: int
    prunable_nonzeros: int
    dense_macs: int
    sparse_macs: int
    sizes: Sizes | None
    verdicts: tuple
    notes: tuple

    @property
    def sparsity(self):
        """Share of zeros among the prunable weights."""
        if not self.prunable_parameters:
            return 0.0
        return 1.0 - self.prunable_nonzeros / self.prunable_parameters

    def runtime_summary(self):
        """Per runtime: its title, weights run faster, and their MAC share."""
        macs = {(r.layer, r.weight): r.dense_macs or 0 for r in self.rows}
        summary = {}
        for runtime, title in runtimes.RUNTIMES.items():
            faster = [
                v for v in self.verdicts if v.runtime == runtime and v.faster
            ]
            faster_macs = sum(macs[(v.layer, v.weight)] for v in faster)
            summary[runtime] = {
                "title": title,
                "num_faster": len(faster),
                "num_weights": len(self.rows),
                "faster_mac_share": (
                    faster_macs / self.dense_macs if self.dense_macs else 0.0
                ),
            }
        return summary

    def to_dict(self):
        """The report as JSON-ready dicts and lists, with `sparsity` and
        `runtimes` (`runtime_summary()`) added."""
        data = _lists(dataclasses.asdict(self))
        data["sparsity"] = self.sparsity
        data["runtimes"] = self.runtime_summary()
        return data


def _lists(value):
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    return value


def report(model, *, sizes=True):
    """Reports each prunable weight's sparsity and which runtimes exploit it.

    Reads the model without changing it. Pruned layers (`PruneLowMagnitude`)
    are read as `strip_pruning` would leave them; plain and loaded models
    work the same. Runtime verdicts follow the rules and measurements
    summarised in `keras_sparsity.runtimes` (LiteRT/TFLite and XNNPack,
    NVIDIA 2:4 sparse tensor cores, CPU sparse kernels, structural
    shrinking).

    Args:
        model: A built `keras.Model`.
        sizes: Whether to measure file sizes, which saves the model to a
            temporary directory three ways (`.keras`, zipped, compressed).

    Returns:
        A `SparsityReport`.

    Example:

    ```python
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])
    info = sparsity.report(model, sizes=False)
    print(info.rows[0].pattern, info.verdicts[0].reason)
    ```
    """
    check_built_model(model, "report")
    if not isinstance(sizes, bool):
        raise TypeError(
            f"Argument `sizes` must be True or False. Received: sizes={sizes!r}"
        )
    notes = []
    rows = []
    masked = {}
    for found in _found_weights(model):
        masked[id(found.pruned.variable)] = found.values
        rows.append(_row(found))
    unknown = [f"{r.layer}/{r.weight}" for r in rows if r.dense_macs is None]
    if unknown:
        notes.append(
            "MACs unknown (input shape not fixed) for: " + ", ".join(unknown)
        )
    num_parameters, num_nonzeros = _count_all(model, masked)
    measured = None
    if sizes:
        measured = _sizes(model, notes)
    return SparsityReport(
        model=model.name,
        rows=tuple(rows),
        num_parameters=num_parameters,
        num_nonzeros=num_nonzeros,
        prunable_parameters=sum(r.num_parameters for r in rows),
        prunable_nonzeros=sum(r.num_nonzeros for r in rows),
        dense_macs=sum(r.dense_macs or 0 for r in rows),
        sparse_macs=sum(r.sparse_macs or 0 for r in rows),
        sizes=measured,
        verdicts=tuple(runtimes.verdicts(model, rows)),
        notes=tuple(notes),
    )


def density_maps(model, max_side=128):
    """Per prunable weight, its canonical 2-D layout's share of non-zeros.

    Rows run over the reduction (input) axes and columns over the outputs;
    a side longer than `max_side` is pooled, each cell holding the share
    of non-zeros it covers. Used by `keras-sparsity report --plot`.

    Returns:
        A list of `(layer, weight, array)` with float arrays in [0, 1].

    Example: `maps = density_maps(model)`
    """
    maps = []
    for found in _found_weights(model):
        kept = (_canonical_matrix(found.values, found.pruned) != 0).astype(
            "float32"
        )
        maps.append((found.layer, found.label, _pool(kept, max_side)))
    return maps


def _canonical_matrix(values, pruned):
    """A weight as a (reduction axes, output axes) matrix, both flattened."""
    rows = math.prod(values.shape[a] for a in pruned.reduction_axes)
    return np.transpose(values, pruned.permutation).reshape(rows, -1)


def _pool(kept, max_side):
    rows, cols = kept.shape
    step_rows = -(-rows // max_side)
    step_cols = -(-cols // max_side)
    padded_rows = -(-rows // step_rows) * step_rows
    padded_cols = -(-cols // step_cols) * step_cols
    sums = np.zeros((padded_rows, padded_cols), "float32")
    counts = np.zeros((padded_rows, padded_cols), "float32")
    sums[:rows, :cols] = kept
    counts[:rows, :cols] = 1.0
    shape = (padded_rows // step_rows, step_rows, -1, step_cols)
    sums = sums.reshape(shape).sum(axis=(1, 3))
    return sums / counts.reshape(shape).sum(axis=(1, 3))


# Finding the weights.


@dataclasses.dataclass
class _Found:
    layer: str
    label: str
    owner: object
    pruned: object
    values: np.ndarray
    operation: str
    positions: int | None


def _found_weights(model):
    """`_Found` for every prunable weight, each layer once, in model order."""
    found = []
    seen = set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, PruneLowMagnitude):
            if layer.built:
                masks = [keras.ops.convert_to_numpy(m) > 0 for m in layer.masks]
                found.extend(_layer_weights(layer.layer, masks))
            return
        if quantization.is_quantized(layer):
            found.append(_quantized_weight(layer))
            return
        if not isinstance(layer, keras.Model) and registry.is_prunable(layer):
            if layer.built:
                found.extend(_layer_weights(layer, None))
            return
        children = (
            layer.layers
            if isinstance(layer, keras.Model)
            else _compat.sublayers(layer)
        )
        for child in children:
            visit(child)

    for layer in model.layers:
        visit(layer)
    return found


def _layer_weights(layer, masks):
    described = macs.weight_uses(layer)
    found = []
    for index, pruned in enumerate(registry.prunable_weights(layer)):
        variable = pruned.variable
        values = keras.ops.convert_to_numpy(variable)
        if masks is not None:
            values = np.where(masks[index], values, np.zeros_like(values))
        label, operation, positions = described.get(
            id(variable), (variable.name, "custom", None)
        )
        found.append(
            _Found(
                layer.name, label, layer, pruned, values, operation, positions
            )
        )
    return found


class _QuantizedWeight(registry.PrunedWeight):
    """A `PrunedWeight` whose stored variable (int4: packed) may not have
    the kernel's rank."""

    def __init__(self, variable, reduction_axes, rank):
        super().__init__(variable, reduction_axes)
        self.rank = rank

    @property
    def permutation(self):
        rest = [a for a in range(self.rank) if a not in self.reduction_axes]
        return self.reduction_axes + tuple(rest)


def _quantized_weight(layer):
    """A Dense/EinsumDense quantized by Keras: its kernel's values in float
    shape, zero where the dequantized weight is zero (int4 stores zeros as
    zero points; `oneshot.quantization.quantized_values`)."""
    values = quantization.quantized_values(layer)
    variable = quantization.stored_kernel(layer)
    pruned = _QuantizedWeight(
        variable, quantization.reduction_axes(layer), values.ndim
    )
    operation = "dense" if isinstance(layer, L.Dense) else "einsum"
    positions = None
    if isinstance(layer.kernel, keras.Variable):  # int4's is unpacked
        _, operation, positions = macs.weight_uses(layer)[id(layer.kernel)]
    return _Found(
        layer.name, "kernel", layer, pruned, values, operation, positions
    )


# One row.


def _row(found):
    values = found.values
    pruned = found.pruned
    size = int(values.size)
    nonzeros = int(np.count_nonzero(values))
    kept = _canonical_matrix(values, pruned) != 0
    reduction = [values.shape[a] for a in pruned.reduction_axes]
    groups = _groups(kept, reduction)
    block = _largest_block(kept) if 0 < nonzeros < size else None
    empty_outputs = int(np.sum(~kept.any(axis=0)))
    empty_inputs, num_inputs = 0, 0
    if groups is not None and found.operation not in ("depthwise", "embedding"):
        num_inputs = groups.shape[1]
        empty_inputs = int(np.sum(~groups.any(axis=(0, 2))))
    dense_macs = macs.multiply_accumulates(found.positions, size)
    return WeightRow(
        layer=found.layer,
        weight=found.label,
        layer_type=type(found.owner).__name__,
        operation=found.operation,
        dtype=found.owner.compute_dtype,
        shape=tuple(int(d) for d in values.shape),
        num_parameters=size,
        num_nonzeros=nonzeros,
        sparsity=1.0 - nonzeros / size if size else 0.0,
        pattern=_pattern(nonzeros, size, block, groups),
        block=block,
        groups_over_2_of_4=(
            0 if groups is None else _groups_over(groups, 2, 4)
        ),
        empty_outputs=empty_outputs,
        num_outputs=int(kept.shape[1]),
        empty_inputs=empty_inputs,
        num_inputs=num_inputs,
        dense_macs=dense_macs,
        sparse_macs=macs.multiply_accumulates(found.positions, nonzeros),
    )


def _groups(kept, reduction):
    """The kept flags as `(outer, in, out)`, `in` the last reduction axis."""
    if not reduction:
        return None
    return kept.reshape(math.prod(reduction[:-1]), reduction[-1], -1)


def _group_counts(groups, m):
    """Non-zeros per group of `m` along `in` (a last partial group padded)."""
    outer, size_in, size_out = groups.shape
    padded = np.pad(groups, ((0, 0), (0, (-size_in) % m), (0, 0)))
    return padded.reshape(outer, -1, m, size_out).sum(axis=2)


def _groups_over(groups, n, m):
    return int(np.sum(_group_counts(groups, m) > n))


def _pattern(nonzeros, size, block, groups):
    if nonzeros == size:
        return "dense"
    if nonzeros == 0:
        return "empty"
    if block is not None and block != (1, 1):
        return f"block {block[0]}x{block[1]}"
    if groups is not None:
        size_in = groups.shape[1]
        for n, m in _N_OF_M:
            if size_in < m or _groups_over(groups, n, m):
                continue
            counts = _group_counts(groups[:, : size_in - size_in % m], m)
            if np.mean(counts == n) >= _N_OF_M_BINDING:
                return f"{n}:{m}"
    return "unstructured"


def _largest_block(kept):
    """Largest `(rows, cols)` (powers of 2 up to 32) whose blocks, edge
    blocks included, are each all zero or all kept."""
    rows = 1
    for side in _BLOCK_SIDES:
        if side > kept.shape[0] or not _uniform_blocks(kept, side, 1):
            break
        rows = side
    cols = 1
    for side in _BLOCK_SIDES:
        if side > kept.shape[1] or not _uniform_blocks(kept, 1, side):
            break
        cols = side
    return (rows, cols)


def _uniform_blocks(kept, block_rows, block_cols):
    rows, cols = kept.shape
    pad = ((0, (-rows) % block_rows), (0, (-cols) % block_cols))
    shape = (
        (rows + pad[0][1]) // block_rows,
        block_rows,
        (cols + pad[1][1]) // block_cols,
        block_cols,
    )
    # Padding is neutral: False for "any kept", True for "all kept".
    some = np.pad(kept, pad, constant_values=False).reshape(shape)
    every = np.pad(kept, pad, constant_values=True).reshape(shape)
    return bool(np.array_equal(some.any(axis=(1, 3)), every.all(axis=(1, 3))))


# Totals and sizes.


def _count_all(model, masked):
    """Parameters and non-zeros of every weight, masks left out."""
    masks = {id(m) for layer in pruning_wrappers(model) for m in layer.masks}
    parameters, nonzeros = 0, 0
    for variable in model.weights:
        if id(variable) in masks:
            continue
        values = masked.get(id(variable))
        if values is None:
            values = keras.ops.convert_to_numpy(variable)
        parameters += int(values.size)
        nonzeros += int(np.count_nonzero(values))
    return parameters, nonzeros


def _sizes(model, notes):
    """`Sizes`, or None with a note when the model cannot be saved."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.sparse")
        dense_path = os.path.join(directory, "model.keras")
        try:
            info = compressed.save_compressed(model, path)
            # Reloaded, the model is saved without optimizer state.
            compressed.load_compressed(path, compile=False).save(dense_path)
        except (NotImplementedError, TypeError, ValueError) as error:
            reason = str(error).split(". ")[0]
            notes.append(
                "Sizes not measured: the model cannot be saved and loaded "
                f"back ({type(error).__name__}: {reason})."
            )
            return None
        zipped_path = os.path.join(directory, "model.zip")
        with zipfile.ZipFile(zipped_path, "w", zipfile.ZIP_DEFLATED) as file:
            file.write(dense_path, "model.keras")
        return Sizes(
            dense_keras_bytes=os.path.getsize(dense_path),
            zipped_bytes=os.path.getsize(zipped_path),
            compressed_bytes=info["compressed_bytes"],
            information_bound_bytes=info["information_bound_bytes"],
        )
