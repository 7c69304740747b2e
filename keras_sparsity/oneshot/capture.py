"""Activation statistics of chosen layers, captured without editing them.

`capture(stats)` patches each layer's `call` with an instance attribute
that adds the layer's input to its `InputStatistics`, and restores the
layer in `finally`, also when the calibration raises (as Keras'
`quantizers/gptq_core.py::stream_hessians` does). `stop_after(layer)`
ends a forward pass once `layer` has run, so that capturing one block
costs the forward pass up to that block.
"""

import contextlib

import keras
from keras import ops

_NOT_SET = object()


class InputStatistics:
    """Sums over every input row `x` a layer sees (flattened by its
    `KernelMatrix`): `sum x_j^2` (`"norms"`, for Wanda and OWL) or
    `X^T X` (`"hessian"`, for SparseGPT), in float32.

    Args:
        view: The layer's `KernelMatrix`.
        kind: `"norms"` or `"hessian"`.
    """

    def __init__(self, view, kind):
        self.view = view
        self.kind = kind
        self.num_rows = 0
        size = view.num_inputs
        shape = (size, size) if kind == "hessian" else (size,)
        self.value = ops.zeros(shape, "float32")

    def add(self, inputs):
        rows = self.view.input_rows(inputs)
        self.num_rows += rows.shape[0]
        if self.kind == "hessian":
            self.value = self.value + ops.matmul(ops.transpose(rows), rows)
        else:
            self.value = self.value + ops.sum(ops.square(rows), axis=0)


class StopForward(Exception):
    """Raised by `stop_after` once its layer has run."""


@contextlib.contextmanager
def capture(stats, stop_after=None):
    """Within the block, each `stats` entry's layer adds its inputs to it.

    Args:
        stats: List of `InputStatistics`.
        stop_after: Optional layer; once its call returns, the forward pass
            is ended by raising `StopForward` (catch it around the call).

    Example:

    ```python
    with capture([InputStatistics(KernelMatrix(dense), "norms")]):
        model(x)
    ```
    """
    patched = []
    try:
        for stat in stats:
            _patch(patched, stat.view.layer, _recording(stat))
        if stop_after is not None:
            _patch(patched, stop_after, _stopping)
        yield
    finally:
        for layer, saved in reversed(patched):
            if saved is _NOT_SET:
                del layer.call
            else:
                layer.call = saved


def _patch(patched, layer, make_hook):
    saved = vars(layer).get("call", _NOT_SET)
    hook = make_hook(layer.call)
    patched.append((layer, saved))
    layer.call = hook


def _recording(stat):
    def make_hook(call):
        def hook(*args, **kwargs):
            inputs = args[0] if args else kwargs["inputs"]
            if not isinstance(inputs, keras.KerasTensor):
                stat.add(inputs)
            return call(*args, **kwargs)

        return hook

    return make_hook


def _stopping(call):
    def hook(*args, **kwargs):
        outputs = call(*args, **kwargs)
        if any(
            isinstance(t, keras.KerasTensor)
            for t in keras.tree.flatten(outputs)
        ):
            return outputs  # a symbolic call, e.g. while building
        raise StopForward()

    return hook
