"""Attention heads and feed-forward units inside a transformer layer.

Found by structure, not by class, so one reading covers Keras'
`MultiHeadAttention` and `GroupedQueryAttention` and the KerasHub blocks
built from `EinsumDense`/`Dense` (GPT-2, BERT, Llama, Gemma, ...):

* an attention layer holds four `EinsumDense` projections named
  `[_]query_dense`, `[_]key_dense`, `[_]value_dense`, `[_]output_dense`;
  the head axis of each kernel is read from its einsum equation (the
  letter of the projection's output before the head dimension, or of the
  output projection's input). With grouped key/value heads, query head `i`
  reads key/value head `i // (query heads / key-value heads)`, as every
  one of those layers repeats or reshapes them;
* a feed-forward block holds `[_]feedforward_intermediate_dense` (and a
  `_feedforward_gate_dense`) then `[_]feedforward_output_dense` (Keras'
  and KerasHub's transformer layers), or Gemma's `gating_ffw`,
  `gating_ffw_2` then `ffw_linear`.

A head (a key/value head with its query heads) is silent when its value
projection is zero, or its rows of the output projection are: its share of
the output is then zero whatever the queries and keys. With one key/value
head (multi-query attention), query heads go one by one, silent when
their output rows are zero. A unit is silent
when its output row is zero, or its columns (and biases) of every input
projection are, through a gate or an activation with `f(0) = 0`.
"""

import dataclasses

import keras
import numpy as np

from keras_sparsity import _compat

_ATTENTION = {
    role: (f"{role}_dense", f"_{role}_dense")
    for role in ("query", "key", "value", "output")
}
_FEED_FORWARD = (
    (("_feedforward_intermediate_dense", "_feedforward_gate_dense"),
     "_feedforward_output_dense"),
    (("gating_ffw", "gating_ffw_2"), "ffw_linear"),
)


@dataclasses.dataclass(frozen=True)
class Projection:
    """A `Dense`/`EinsumDense` of a block: its attribute path from the
    block, the axis of its kernel along heads or units, and that axis in
    its bias (None: no bias, or a bias not along it)."""

    path: str
    axis: int
    bias_axis: object = None


@dataclasses.dataclass(frozen=True)
class Attention:
    """An attention layer of a block (`path` "" for the block itself)."""

    path: str
    query: Projection
    key: Projection
    value: Projection
    output: Projection
    num_heads: int
    num_kv_heads: int
    gate: object = None  # a Projection gating each query head's output

    @property
    def repeat(self):
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    @property
    def by_query(self):
        """Multi-query attention (one key/value head): its query heads go
        one by one; otherwise a key/value head goes with its query heads."""
        return self.num_kv_heads == 1 and self.num_heads > 1

    @property
    def num_units(self):
        """How many heads can go: query heads, or key/value heads."""
        return self.num_heads if self.by_query else self.num_kv_heads

    @property
    def unit_repeat(self):
        """Query heads per unit that goes."""
        return 1 if self.by_query else self.repeat


@dataclasses.dataclass(frozen=True)
class FeedForward:
    """A feed-forward block: its input projections (one, or two through a
    gate) write `units` columns; the output projection reads them.
    `columns_silence`: zero input columns silence a unit (through a gate,
    or an activation with `f(0) = 0`); otherwise only its output row
    does."""

    inputs: tuple
    output: Projection
    units: int
    columns_silence: bool


def attentions(layer):
    """The attention layers of `layer`: itself, or its direct sublayers."""
    found = []
    own = _attention(layer, "")
    if own is not None:
        return [own]
    # On torch, layers set as attributes live in `_modules`.
    names = set(vars(layer)) | set(getattr(layer, "_modules", {}))
    for name in sorted(names):
        value = getattr(layer, name, None)
        if isinstance(value, keras.layers.Layer):
            attention = _attention(value, name)
            if attention is not None:
                found.append(attention)
    return found


def holds_parts(layer):
    """True for a layer (not a model) with attention heads or a
    feed-forward block of its own."""
    return not isinstance(layer, keras.Model) and bool(
        attentions(layer) or feed_forward(layer) is not None
    )


def outermost(model):
    """`(parent, layer)` for the outermost sublayers of `model` that hold
    heads or feed-forward units (nested models are opened, not taken)."""
    found = []

    def visit(parent):
        for child in _compat.sublayers(parent):
            if holds_parts(child):
                found.append((parent, child))
            else:
                visit(child)

    visit(model)
    return found


def feed_forward(layer):
    """The feed-forward block of `layer`, or None."""
    for input_names, output_name in _FEED_FORWARD:
        inputs = [getattr(layer, n, None) for n in input_names]
        output = getattr(layer, output_name, None)
        if inputs[0] is None or output is None:
            continue
        names = [n for n, d in zip(input_names, inputs) if d is not None]
        projections = [_projection(layer, n, "columns") for n in names]
        out = _projection(layer, output_name, "rows")
        if None in projections or out is None:
            return None
        units = {
            int(resolve(layer, p.path).kernel.shape[p.axis])
            for p in [*projections, out]
        }
        if len(units) != 1:
            return None
        silence = len(names) > 1 or _zero_preserving(inputs[0])
        return FeedForward(tuple(projections), out, units.pop(), silence)
    return None


def resolve(layer, path):
    """The attribute at dotted `path` from `layer` ("" is `layer`)."""
    for name in filter(None, path.split(".")):
        layer = getattr(layer, name)
    return layer


def join(*parts):
    return ".".join(p for p in parts if p)


def silent_heads(block, attention):
    """Indices of the silent heads of `attention` (in `block`): query
    heads under multi-query attention, else key/value heads."""
    output = _all_zero(_numpy(block, attention.output), attention.output.axis)
    if attention.by_query:
        return np.flatnonzero(output)
    value = _numpy(block, attention.value)
    silent = _all_zero(value, attention.value.axis)
    bias = _bias(block, attention.value)
    if bias is not None:
        silent &= _all_zero(bias, attention.value.bias_axis)
    silent |= output.reshape(-1, attention.repeat).all(axis=1)
    return np.flatnonzero(silent)


def silent_units(block, ffn):
    """Unit indices of `ffn` (in `block`) that are silent."""
    silent = _all_zero(_numpy(block, ffn.output), ffn.output.axis)
    for projection in ffn.inputs if ffn.columns_silence else ():
        # One input: f(0) = 0 was checked when found. Two: the gate's zero
        # or the other's zeroes the product.
        zero = _all_zero(_numpy(block, projection), projection.axis)
        bias = _bias(block, projection)
        if bias is not None:
            zero &= _all_zero(bias, projection.bias_axis)
        silent |= zero
    return np.flatnonzero(silent)


def head_slices(attention, keep):
    """`[(Projection, kept indices)]` removing the heads not in `keep`
    (`silent_heads`' units) with their query heads and output rows."""
    keep = np.asarray(keep, int)
    queries = (keep[:, None] * attention.unit_repeat
               + np.arange(attention.unit_repeat)).ravel()
    found = [(attention.query, queries), (attention.output, queries)]
    if not attention.by_query:
        found += [(attention.key, keep), (attention.value, keep)]
    if attention.gate is not None:
        found.append((attention.gate, queries))
    return found


def unit_slices(ffn, keep):
    """`[(Projection, kept indices)]` removing the units not in `keep`."""
    keep = np.asarray(keep, int)
    return [(p, keep) for p in (*ffn.inputs, ffn.output)]


def sliced_weights(owner, cuts):
    """`owner.get_weights()` with each projection cut: `cuts` holds
    `(block, Projection, kept indices)`, the block a sublayer of `owner`
    (or `owner` itself); kernel and bias are cut along their axes."""
    axes = {}
    for block, projection, keep in cuts:
        dense = resolve(block, projection.path)
        axes[id(dense.kernel)] = (projection.axis, keep)
        if projection.bias_axis is not None:
            axes[id(dense.bias)] = (projection.bias_axis, keep)
    weights = []
    for variable in owner.weights:
        value = keras.ops.convert_to_numpy(variable)
        if id(variable) in axes:
            axis, keep = axes[id(variable)]
            value = np.take(value, keep, axis=axis)
        weights.append(value)
    return weights


def _attention(layer, path):
    dense = {}
    for role, names in _ATTENTION.items():
        name = next((n for n in names if _is_einsum(getattr(layer, n, None))),
                    None)
        if name is None:
            return None
        dense[role] = name
    projections = {
        role: _projection(layer, name, "input" if role == "output" else "out")
        for role, name in dense.items()
    }
    if None in projections.values():
        return None
    num_heads = _size(layer, projections["query"])
    num_kv = _size(layer, projections["key"])
    if (
        _size(layer, projections["value"]) != num_kv
        or _size(layer, projections["output"]) != num_heads
        or num_heads % num_kv
    ):
        return None
    gate = None
    gate_name = next(
        (n for n in ("gate_dense", "_gate_dense")
         if getattr(layer, n, None) is not None),
        None,
    )
    if gate_name is not None:  # Keras' attention with `use_gate=True`
        gate = _projection(layer, gate_name, "out")
        if gate is None or _size(layer, gate) != num_heads:
            return None
        gate = dataclasses.replace(gate, path=join(path, gate.path))
    return Attention(
        path,
        *(
            dataclasses.replace(p, path=join(path, p.path))
            for p in projections.values()
        ),
        num_heads=num_heads,
        num_kv_heads=num_kv,
        gate=gate,
    )


def _projection(layer, name, side):
    """The head/unit axis of `layer.<name>`'s kernel: along its output
    ("out": heads before the last output axis; "columns": the last output
    axis) or its input ("input": heads before the last input axis; "rows":
    the last input axis)."""
    dense = getattr(layer, name, None)
    if isinstance(dense, keras.layers.Dense) and dense.kernel is not None:
        if side == "columns":
            return Projection(name, 1, 0 if dense.bias is not None else None)
        if side == "rows":
            return Projection(name, 0)
        return None
    if not _is_einsum(dense):
        return None
    inputs, rest = dense.equation.split(",")
    kernel, output = rest.split("->")
    letter = {
        "out": output[-2:-1], "columns": output[-1:],
        "input": inputs[-2:-1], "rows": inputs[-1:],
    }[side]
    if not letter or letter not in kernel or "." in dense.equation:
        return None
    bias_axis = None
    if dense.bias is not None and side in ("out", "columns"):
        bias_axes = dense.bias_axes or ""
        if letter not in bias_axes:
            return None  # a bias that mixes heads: not sliced
        bias_axis = bias_axes.index(letter)
    return Projection(name, kernel.index(letter), bias_axis)


def _is_einsum(layer):
    return (
        isinstance(layer, keras.layers.EinsumDense)
        and getattr(layer, "kernel", None) is not None
    )


def _size(layer, projection):
    return int(resolve(layer, projection.path).kernel.shape[projection.axis])


def _zero_preserving(dense):
    activation = getattr(dense, "activation", None)
    if activation is None:
        return True
    zero = keras.ops.convert_to_numpy(activation(keras.ops.zeros((1,))))
    return bool(zero[0] == 0.0)


def _numpy(block, projection):
    return keras.ops.convert_to_numpy(resolve(block, projection.path).kernel)


def _bias(block, projection):
    if projection.bias_axis is None:
        return None
    return keras.ops.convert_to_numpy(resolve(block, projection.path).bias)


def _all_zero(array, axis):
    """Per index along `axis`: is everything else zero?"""
    return ~np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1).any(1)
