"""Which runtime runs which sparse weight faster, and why not the others.

The rules, and the figures quoted in the verdicts, come from measurements
on an x86 (AVX2) CPU and from the runtimes' documentation and source:

* **LiteRT / TFLite** (`TFLiteConverter` with `EXPERIMENTAL_SPARSITY`)
  keeps a fully-connected (`Dense`) kernel sparse only in 1x4 blocks of
  its (out, in) layout, 4 consecutive inputs of one output, which is
  `block_size=(4, 1)` here (from about 30 % zeros), or from about 98 %
  random zeros; any other sparse kernel is densified (a DENSIFY op) and
  runs dense. Its sparse kernel ran 1.4-5.2x faster at 90 % 1x4 blocks
  (batch 1-8), about break-even at 80 %. XNNPack's sparse path takes 1x1
  convolutions with >= 2/3 zeros in a subgraph that starts with a 3x3
  stride-2 convolution on 3 channels and ends with a spatial mean, with
  only 1x1 and 3x3/5x5 depthwise convolutions and elementwise layers
  between; on ARM only: XNNPack switches it off on x86 CPUs with AVX.
* **NVIDIA 2:4 sparse tensor cores** (cuSPARSELt, CUTLASS, TensorRT) take
  matrix products and convolutions whose every 4 consecutive weights
  along the input (reduction) axis hold at most 2 non-zeros, in float16,
  bfloat16, int8 or float32 (run as TF32), on Ampere or newer GPUs; the
  gain (up to 2x math) shows only in compute-bound, large-batch products.
* **CPU sparse kernels** (CSR/BSR: scipy, torch.sparse, small custom
  kernels) beat the best dense engine only from about 90 % zeros; at 80 %
  they break even, 2:4 runs slower than dense.
* **Structural shrinking**: output columns (units, filters) or input
  channels that are entirely zero can be cut away, leaving a smaller dense
  kernel that every engine runs faster.
"""

import dataclasses

from keras_sparsity import _compat
from keras_sparsity.policy import PruneForLatencyOnXNNPack

RUNTIMES = {
    "litert": "LiteRT / TFLite",
    "nvidia_2_4": "NVIDIA 2:4 sparse tensor cores",
    "cpu_sparse": "CPU sparse kernels",
    "structural": "Structural shrinking",
}

_MATMULS = ("dense", "einsum", "recurrent")
_TENSOR_CORE_DTYPES = {
    "float16": 16,
    "bfloat16": 16,
    "int8": 32,
    "float32": 32,
}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether one runtime runs one weight faster, and why (or why not).

    `runtime` is a key of `RUNTIMES`; `reason` says what was found and,
    when the answer is no, what would change it.

    Example: `[v.reason for v in sparsity.report(model).verdicts]`
    """

    runtime: str
    layer: str
    weight: str
    faster: bool
    reason: str


def verdicts(model, rows):
    """One `Verdict` per runtime of `RUNTIMES` and row, grouped by runtime.

    Args:
        model: The `keras.Model` the rows describe (its layer graph decides
            XNNPack's sparse subgraphs).
        rows: The `WeightRow`s of `keras_sparsity.report`.

    Example: `verdicts(model, sparsity.report(model, sizes=False).rows)`
    """
    pointwise = _xnnpack(model, rows)
    plan = _shrink_plan(model)
    rules = {
        "litert": lambda row: _litert(row, pointwise),
        "nvidia_2_4": _nvidia,
        "cpu_sparse": _cpu,
        "structural": lambda row: _structural(row, plan),
    }
    return [
        Verdict(runtime, row.layer, row.weight, *_rule(runtime, row, rules))
        for runtime in RUNTIMES
        for row in rows
    ]


def _rule(runtime, row, rules):
    if row.pattern == "empty" and runtime != "structural":
        return False, (
            "every weight is zero: remove the layer (its output is its "
            "bias) rather than run it sparse"
        )
    return rules[runtime](row)


def _pct(fraction):
    value = round(100 * fraction, 1)
    return f"{value:.0f} %" if value == int(value) else f"{value:.1f} %"


def _found(row):
    if row.pattern in ("dense", "empty"):
        return row.pattern
    return f"{row.pattern} {_pct(row.sparsity)}"


def _reaches(row, level):
    """Sparsity at least `level`, give or take half a weight (rounding)."""
    zeros = row.num_parameters - row.num_nonzeros
    return zeros >= level * row.num_parameters - 0.5


def _is_pointwise_kernel(row):
    return row.operation == "conv" and all(d == 1 for d in row.shape[:-2])


def _litert(row, pointwise):
    if (row.layer, row.weight) in pointwise:
        return pointwise[(row.layer, row.weight)]
    if row.operation != "dense":
        return False, (
            "LiteRT runs sparse kernels only for Dense (fully-connected) "
            "layers and, through XNNPack on ARM, 1×1 convolutions; this "
            f"{row.layer_type} kernel runs dense"
        )
    if row.pattern == "dense":
        return False, "dense: no zeros to skip"
    in_1x4 = row.block is not None and row.block[0] >= 4
    if in_1x4 and _reaches(row, 0.9):
        return True, (
            f"TFLite 1×4 blocks (block_size=(4, 1) here) at "
            f"{_pct(row.sparsity)}: its sparse FULLY_CONNECTED kernel ran "
            "1.4-5.2× faster at 90 % (batch 1-8)"
        )
    if in_1x4 and _reaches(row, 0.3):
        return False, (
            f"kept sparse as TFLite 1×4 blocks, but at {_pct(row.sparsity)} "
            "that is about break-even (0.4-1.9× at 80 %); prune to >= 90 %"
        )
    if in_1x4:
        return False, (
            f"TFLite 1×4 blocks at {_pct(row.sparsity)}: the converter keeps "
            "them sparse from about 30 % zeros, and they pay from about 90 %"
        )
    if _reaches(row, 0.98):
        return True, (
            f"{_pct(row.sparsity)} zeros: kept sparse, TFLite's sparse "
            "kernel ran 1.5-8.6× faster at 98 % (batch 1-8)"
        )
    return False, (
        "TFLite 1×4 blocks (block_size=(4, 1): 4 consecutive inputs of one "
        f"output) or >= 98 % zeros needed, found {_found(row)}: the "
        "converter stores it dense or behind a DENSIFY op, so it runs dense"
    )


def _nvidia(row):
    if row.operation not in ("dense", "einsum", "conv"):
        what = {
            "recurrent": "recurrent kernels run in fused RNN kernels",
            "conv_recurrent": "recurrent kernels run in fused RNN kernels",
            "embedding": "an embedding is a lookup, not a matrix product",
            "depthwise": "a depthwise convolution is not a matrix product",
        }.get(row.operation, f"{row.layer_type} kernels are not supported")
        return False, (
            f"{what}; 2:4 sparse tensor cores run Dense, attention "
            "(EinsumDense) and convolution kernels"
        )
    if row.pattern == "dense":
        return False, "dense: prune with sparsity_m_by_n=(2, 4)"
    if row.groups_over_2_of_4:
        groups = row.num_parameters // row.num_inputs * -(-row.num_inputs // 4)
        return False, (
            f"{row.groups_over_2_of_4} of {groups} groups of 4 along the "
            f"input axis keep more than 2 weights (found {_found(row)}); "
            "prune with sparsity_m_by_n=(2, 4)"
        )
    smallest = _TENSOR_CORE_DTYPES.get(row.dtype)
    if smallest is None:
        return False, (
            f"{row.dtype} has no sparse tensor core path; compute in "
            "float16, bfloat16 (mixed precision), int8 or float32 (TF32)"
        )
    inputs = row.num_parameters // row.num_outputs
    if min(inputs, row.num_outputs) < smallest:
        return False, (
            f"the kernel is {inputs}×{row.num_outputs} (inputs × outputs); "
            f"sparse {row.dtype} kernels need at least {smallest}×{smallest}"
        )
    as_tf32 = " (run as TF32)" if row.dtype == "float32" else ""
    return True, (
        f"2:4 along the input axis in {row.dtype}{as_tf32}: sparse tensor "
        "cores on Ampere or newer GPUs, up to 2× math in large-batch "
        "products (no gain at batch 1)"
    )


def _cpu(row):
    if row.operation == "embedding":
        return False, (
            "an embedding lookup reads one row per token: zeros save memory, "
            "not time"
        )
    if row.operation not in _MATMULS and not _is_pointwise_kernel(row):
        return False, (
            "CPU sparse kernels pay for matrix products (Dense, attention, "
            f"RNN and 1×1 convolution kernels); this {row.layer_type} "
            "kernel runs dense"
        )
    if row.pattern == "dense":
        return False, "dense: no zeros to skip"
    if _reaches(row, 0.9):
        if row.block is not None and row.block[0] * row.block[1] >= 4:
            return True, (
                f"{_pct(row.sparsity)} in {row.block[0]}×{row.block[1]} "
                "blocks: block-sparse (BSR) kernels ran 1.1-5.3× faster "
                "than the best dense engine at 90 %"
            )
        return True, (
            f"{_pct(row.sparsity)} zeros: CSR kernels ran 1.0-3.3× faster "
            "than the best dense engine at 90 % (scipy or numba at batch 1, "
            "torch.sparse at batch 8+)"
        )
    if ":" in row.pattern:
        return False, (
            f"found {_found(row)}: no CPU engine has an N:M kernel (2:4 ran "
            "0.2-0.66× as CSR); sparse kernels pay from about 90 % zeros"
        )
    if _reaches(row, 0.8):
        return False, (
            f"found {_found(row)}: about break-even on CPU (0.4-1.6× at "
            "80 %); sparse kernels pay from about 90 % zeros"
        )
    return False, (
        f"found {_found(row)}: sparse kernels are slower than dense below "
        "80 % (1.9-6.7× slower at 50 %); they pay from about 90 % zeros"
    )


def _shrink_plan(model):
    """`shrink`'s plan for a Sequential or functional model (the verdict
    then says what `shrink` would do), else None (kernel by kernel)."""
    from keras_sparsity.structural import shrink

    if not _compat.is_plain_graph(model) or _compat.graph_calls(model) is None:
        return None
    return shrink(model, plan_only=True)


def _structural(row, plan):
    if plan is None or row.weight not in ("kernel", "pointwise_kernel"):
        return _structural_alone(row)
    channels = [g for g in plan.groups if g.unit == "channels"]
    produced = [g for g in channels if row.layer in g.producers]
    read = [g for g in channels if row.layer in g.consumers]
    if not produced:  # not a kernel shrink slices (depthwise, attention)
        return _structural_alone(row)
    (group,) = produced
    removed_out = group.num_channels - group.num_kept
    removed_in = sum(g.num_channels - g.num_kept for g in read)
    if removed_out or removed_in:
        found = []
        if removed_out:
            found.append(f"{removed_out} of {group.num_channels} outputs")
        if removed_in:
            found.append(f"{removed_in} input channels")
        return True, (
            f"shrink removes {' and '.join(found)} of this kernel: a smaller "
            "dense kernel, faster on every engine "
            "(`shrink(model, plan_only=True)` shows the plan)"
        )
    if row.empty_outputs == row.num_outputs:
        return _structural_alone(row)
    if row.empty_outputs:
        return False, (
            f"{row.empty_outputs} of {row.num_outputs} outputs are all zero, "
            "but shrink keeps them: "
            + "; ".join(group.reasons or ("a coupled layer still uses them",))
        )
    return _structural_alone(row)


def _structural_alone(row):
    """The verdict from the kernel alone (no graph to follow)."""
    outputs, inputs = row.num_outputs, row.num_inputs
    if row.empty_outputs == outputs:
        return True, (
            "every weight is zero: the layer's output is constant (its "
            "bias), so the layer can be removed"
        )
    if not (row.empty_outputs or row.empty_inputs):
        if row.pattern == "dense":
            return False, "dense: nothing to remove"
        return False, (
            f"no output or input is entirely zero (found {_found(row)}): "
            "scattered zeros cannot be cut away; channel pruning would"
        )
    kept = (outputs - row.empty_outputs) / outputs
    empty = f"{row.empty_outputs} of {outputs} outputs"
    if inputs:
        kept *= (inputs - row.empty_inputs) / inputs
        empty += f" and {row.empty_inputs} of {inputs} inputs"
    return True, (
        f"{empty} are all zero: cutting them leaves a {_pct(1 - kept)} "
        "smaller dense kernel, faster on every engine"
    )


# XNNPack's sparse subgraphs.


def _xnnpack(model, rows):
    """`{(layer, weight): (faster, reason)}` for the 1×1 Conv2D kernels.

    The subgraph rule is `PruneForLatencyOnXNNPack`'s own (one rule set:
    the policy prunes exactly what this verdict calls faster); XNNPack's
    sparse path then needs at least 2/3 of those kernels' weights zero.
    """
    policy = PruneForLatencyOnXNNPack()
    pointwise = {
        (layer.name, "kernel")
        for layer in _compat.all_sublayers(model)
        if policy.allow_pruning(layer)
    }
    rows = [
        row
        for row in rows
        if (row.layer, row.weight) in pointwise or _is_pointwise_kernel(row)
    ]
    try:
        policy.ensure_model_supports_pruning(model)
    except ValueError as error:
        reason = " ".join(str(error).split())
        return {(row.layer, row.weight): (False, reason) for row in rows}
    size = sum(row.num_parameters for row in rows)
    zeros = size - sum(row.num_nonzeros for row in rows)
    share = zeros / size if size else 0.0
    if 3 * zeros >= 2 * size:
        verdict = (
            True,
            (
                f"the model's 1×1 convolutions are {_pct(share)} zero "
                "(>= 2/3): XNNPack's sparse path, on ARM only (1.3-2.4× "
                "reported for MobileNets); x86 CPUs with AVX run it dense"
            ),
        )
    else:
        verdict = (
            False,
            (
                f"the model's 1×1 convolutions are {_pct(share)} zero; "
                "XNNPack's sparse path needs >= 2/3 (67 %)"
            ),
        )
    return {(row.layer, row.weight): verdict for row in rows}
