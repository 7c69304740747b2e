"""One-shot pruning of a trained model, block after block.

As in SparseGPT and Wanda, blocks are pruned in order, and the statistics
of a block's layers are measured on inputs that went through the already
pruned blocks before it. Blocks are a KerasHub backbone's
`transformer_layers` (then any other chosen layer on its own), or else the
model's top-level layers that hold a chosen kernel, in their order. For
each block the model runs forward again on the calibration data, with only
that block's layers captured, and stops once the block has run: memory
holds one block's statistics (one Hessian per layer for SparseGPT), and the
compute is one partial forward pass per block.
"""

import numbers
import re
import warnings

import keras

from keras_sparsity import _compat
from keras_sparsity import cloning
from keras_sparsity.oneshot import calibration
from keras_sparsity.oneshot import capture
from keras_sparsity.oneshot import recovery
from keras_sparsity.oneshot import selection
from keras_sparsity.oneshot.matrix_view import KernelMatrix
from keras_sparsity.oneshot.owl import OutlierWeighted
from keras_sparsity.oneshot.sparsegpt import sparsegpt_prune
from keras_sparsity.oneshot.wanda import wanda_keep
from keras_sparsity.walk import pruning_wrappers

METHODS = ("magnitude", "wanda", "sparsegpt")
ALLOCATIONS = ("uniform", "owl")


def prune(
    model,
    calibration_data=None,
    *,
    method="wanda",
    sparsity=0.5,
    sparsity_m_by_n=None,
    layers=None,
    allocation="uniform",
    inplace=False,
    keep_masks=False,
):
    """Prunes a trained model in one shot from a few calibration batches.

    No training: each chosen Dense and EinsumDense kernel (attention
    query/key/value/output and feed-forward projections of KerasHub
    blocks), read as a matrix `W` of (outputs, inputs), is pruned from the
    inputs it sees on `calibration_data`:

    * `"magnitude"`: the largest `|W|` of the kernel (needs no data);
    * `"wanda"` (Sun et al., 2024): the largest `|W_ij| * ||X_j||_2` of
      each output row, so every row keeps the same count;
    * `"sparsegpt"` (Frantar & Alistarh, 2023): the mask is chosen per
      block of 128 inputs by `w^2 / [H^-1]_jj^2`, with `H = X^T X` damped
      by 1 % of its mean diagonal, and the remaining weights are updated
      to make up for the pruned ones (OBS updates, lazy batched).

    Blocks are pruned in order, each measured on the outputs of the
    already pruned blocks before it (see the module docstring). Layers'
    inputs are captured by patching their `call` for the duration of each
    pass; they are restored afterwards, also on errors.

    Args:
        model: A built `keras.Model`: Sequential, functional, a KerasHub
            backbone or task, or a subclassed model.
        calibration_data: Inputs of the model: one batch (an array or a
            dict of arrays, e.g. a KerasHub preprocessor's
            `{"token_ids", "padding_mask"}`), a Python iterable of batches
            (`(x, y)` tuples are read as `x`), or a `tf.data.Dataset`.
            Optional for `"magnitude"` (unless `allocation="owl"`).
        method: `"wanda"` (default), `"sparsegpt"` or `"magnitude"`.
        sparsity: Float in [0, 1): the fraction of each kernel zeroed.
            Magnitude and SparseGPT keep exactly
            `round(size * (1 - sparsity))` weights per kernel, Wanda
            `round(d_in * (1 - sparsity))` per output row.
        sparsity_m_by_n: None, or `(m, n)` with `0 < m < n`: exactly `m`
            zeros in every `n` consecutive inputs of each output (2:4 is
            `(2, 4)`); `sparsity` is then `m / n` and not used. Each
            kernel's input size must be a multiple of `n`.
        layers: Which layers to prune: None (every Dense and EinsumDense),
            a regex searched in each layer's path (e.g.
            `"transformer_layer_.*/(query|key|value)"`), or a callable
            `layer -> bool`.
        allocation: `"uniform"` (every block at `sparsity`), `"owl"`
            (outlier-weighted, Yin et al. 2024: blocks with more outlier
            scores kept denser, the blocks' mean at `sparsity`; M = 5,
            λ = 0.08), or an `OutlierWeighted(outlier_threshold,
            max_deviation)`. Not with `sparsity_m_by_n`.
        inplace: If True, prune `model` itself (no copy: for large models)
            and return it.
        keep_masks: If True, return the pruned model wrapped by
            `prune_low_magnitude` with masks equal to the one-shot masks,
            which never change during training (`FrozenMasks` schedule):
            fine-tune it to recover accuracy, then `strip_pruning`. A plain
            Sequential or functional model is wrapped as a copy.

    Returns:
        The pruned model, of `model`'s class (a copy unless `inplace`),
        with exactly sparse kernels.

    Raises:
        ValueError: For an unknown method or allocation, a sparsity
            outside [0, 1), a bad `sparsity_m_by_n`, `layers` choosing
            nothing, missing or empty calibration data, or batches the
            model cannot run; always before `model` is changed.

    Example:

    ```python
    from keras_sparsity import oneshot

    batch = {"token_ids": token_ids, "padding_mask": padding_mask}
    sparse_lm = oneshot.prune(causal_lm, [batch], method="sparsegpt")
    two_four = oneshot.prune(causal_lm, [batch], sparsity_m_by_n=(2, 4))
    ```
    """
    _check_arguments(method, sparsity, sparsity_m_by_n, allocation)
    m_by_n = None if sparsity_m_by_n is None else tuple(sparsity_m_by_n)
    if m_by_n is not None:
        sparsity = m_by_n[0] / m_by_n[1]
    if allocation == "owl":
        allocation = OutlierWeighted()
    _check_model(model)
    _targets(model, layers, m_by_n)  # raises before anything is copied
    needs_data = method != "magnitude" or allocation != "uniform"
    batches = (
        calibration.calibration_batches(calibration_data)
        if needs_data or calibration_data is not None
        else None
    )
    work = model if inplace else _copy(model)
    keeps = _Pruning(work, layers, method, sparsity, m_by_n).run(
        batches, allocation
    )
    if keep_masks:
        return recovery.attach_masks(work, keeps)
    return work


def _check_arguments(method, sparsity, m_by_n, allocation):
    if method not in METHODS:
        raise ValueError(
            f"Argument `method` must be one of {METHODS}. "
            f"Received: method={method!r}"
        )
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise TypeError(
            "Argument `sparsity` must be a float in [0, 1), e.g. 0.5 to zero "
            f"half of each kernel. Received: sparsity={sparsity!r}"
        )
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            "Argument `sparsity` must be a float in [0, 1), e.g. 0.5 to zero "
            f"half of each kernel. Received: sparsity={sparsity!r}"
        )
    if m_by_n is not None:
        valid = (
            isinstance(m_by_n, (tuple, list))
            and len(m_by_n) == 2
            and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool)
                for v in m_by_n
            )
            and 0 < m_by_n[0] < m_by_n[1]
        )
        if not valid:
            raise ValueError(
                "Argument `sparsity_m_by_n` must be None or a pair of ints "
                "(m, n) with 0 < m < n: m zeros in every n consecutive "
                "inputs, e.g. (2, 4). Received: "
                f"sparsity_m_by_n={m_by_n!r}"
            )
    if not (
        allocation in ALLOCATIONS or isinstance(allocation, OutlierWeighted)
    ):
        raise ValueError(
            f"Argument `allocation` must be one of {ALLOCATIONS} or an "
            "`OutlierWeighted`. Received: allocation={allocation!r}"
        )
    if m_by_n is not None and allocation != "uniform":
        raise ValueError(
            "Argument `sparsity_m_by_n` fixes every kernel at m/n sparsity, "
            "so it cannot be combined with a per-block allocation; use "
            f"allocation='uniform'. Received: allocation={allocation!r}"
        )


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Argument `model` must be a `keras.Model`. Received: "
            f"model of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "Argument `model` must be built: call it on a batch first. "
            f"Received: model={model.name!r}"
        )
    if pruning_wrappers(model):
        raise ValueError(
            "Argument `model` holds PruneLowMagnitude layers; call "
            "`strip_pruning` first to prune it in one shot. Received: "
            f"model={model.name!r}"
        )


def _targets(model, layers, m_by_n):
    """`KernelMatrix` views of the chosen Dense/EinsumDense layers."""
    if not (layers is None or isinstance(layers, str) or callable(layers)):
        raise TypeError(
            "Argument `layers` must be None, a regex or a callable "
            f"`layer -> bool`. Received: layers={layers!r}"
        )
    views, skipped = [], []
    for layer in _compat.all_sublayers(model):
        if not isinstance(
            layer, (keras.layers.Dense, keras.layers.EinsumDense)
        ):
            continue
        if not layer.built or not _chosen(layer, layers):
            continue
        try:
            view = KernelMatrix(layer)
        except ValueError as error:
            skipped.append(str(error))
            continue
        if m_by_n is not None and view.num_inputs % m_by_n[1]:
            raise ValueError(
                "Argument `sparsity_m_by_n` needs every chosen kernel's "
                f"input size to be a multiple of n={m_by_n[1]}, but layer "
                f"{view.name!r} has {view.num_inputs} inputs; exclude it "
                f"with `layers=`. Received: sparsity_m_by_n={m_by_n}"
            )
        views.append(view)
    for message in skipped:
        warnings.warn(message, stacklevel=3)
    if not views:
        raise ValueError(
            "Argument `layers` chose no Dense or EinsumDense layer of the "
            "model, so there is nothing to prune in one shot; pass None to "
            "choose them all, or a regex searched in layer paths such as "
            f"'feedforward'. Received: layers={layers!r} for model "
            f"{model.name!r}"
        )
    return views


def _chosen(layer, layers):
    if layers is None:
        return True
    if isinstance(layers, str):
        return re.search(layers, layer.path or layer.name) is not None
    return bool(layers(layer))


def _copy(model):
    """A copy of `model` of the same class with the same weights."""
    if _compat.is_plain_graph(model):
        copy = cloning.clone_graph(model, _clone_layer)
        if model.compiled:
            cloning.recompile(copy, model.get_compile_config())
        return copy
    copy = cloning.rebuilt_copy(model, "model")
    cloning.copy_weights(model, copy)
    return copy


def _clone_layer(layer):
    if not isinstance(layer, keras.layers.Layer):  # keras.ops in a graph
        return layer, None
    if isinstance(layer, keras.Model):
        return _copy(layer), None
    copy = cloning.copy_or_share(layer)
    if copy is layer or not layer.built:
        return copy, None
    weights = layer.get_weights()
    return copy, lambda: copy.set_weights(weights)


def _blocks(model, views):
    """`(block layer or None, its views)` in forward order."""
    owner = _transformer_owner(model)
    if owner is not None:
        candidates = list(owner.transformer_layers)
    else:
        candidates = list(model.layers)
    blocks, claimed = [], set()
    for block in candidates:
        inner = {id(block)} | {id(sub) for sub in _compat.all_sublayers(block)}
        members = [
            v for v in views if id(v.layer) in inner and id(v) not in claimed
        ]
        if members:
            claimed.update(id(v) for v in members)
            blocks.append((block, members))
    blocks += [(v.layer, [v]) for v in views if id(v) not in claimed]
    return blocks


def _transformer_owner(model):
    for candidate in (model, getattr(model, "backbone", None)):
        if isinstance(
            getattr(candidate, "transformer_layers", None), (list, tuple)
        ):
            return candidate
    return None


class _Pruning:
    """One run of `prune` on the model it edits."""

    def __init__(self, model, layers, method, sparsity, m_by_n):
        self.model = model
        self.method = method
        self.sparsity = sparsity
        self.m_by_n = m_by_n
        self.views = _targets(model, layers, m_by_n)

    def run(self, batches, allocation):
        blocks = _blocks(self.model, self.views)
        sparsities = [self.sparsity] * len(blocks)
        if batches is not None:
            # A full pass first: every batch must run through the whole
            # model before anything is pruned (OWL measures on it).
            norms = {}
            if allocation != "uniform":
                norms = {
                    id(v): capture.InputStatistics(v, "norms")
                    for v in self.views
                }
            with capture.capture(list(norms.values())):
                self._forward(batches, check=True)
            if norms:
                ratios = [
                    allocation.outlier_ratio(
                        [(v.read(), norms[id(v)].value) for v in members]
                    )
                    for _, members in blocks
                ]
                sparsities = allocation.sparsities(ratios, self.sparsity)
        keeps = {}
        for (block, members), sparsity in zip(blocks, sparsities):
            stats = self._block_statistics(block, members, batches)
            for view, stat in zip(members, stats):
                keep = self._prune_view(view, stat, sparsity)
                keeps[id(view.layer)] = (view.layer.name, view.to_kernel(keep))
        return keeps

    def _block_statistics(self, block, members, batches):
        if self.method == "magnitude":
            return [None] * len(members)
        kind = "hessian" if self.method == "sparsegpt" else "norms"
        stats = [capture.InputStatistics(v, kind) for v in members]
        with capture.capture(stats, stop_after=block):
            self._forward(batches)
        return stats

    def _forward(self, batches, check=False):
        for batch in batches:
            try:
                self.model(batch, training=False)
            except capture.StopForward:
                continue
            except Exception as error:
                if not check:
                    raise
                raise ValueError(
                    "Argument `calibration_data` holds a batch the model "
                    f"cannot run: {type(error).__name__}: {error}. Pass "
                    "inputs as for `model(x)` (for KerasHub, the "
                    "preprocessor's output dict). The model is unchanged. "
                    f"Received: a batch of structure {_structure(batch)}"
                ) from error

    def _prune_view(self, view, stat, sparsity):
        weight = view.read()
        if self.method == "magnitude":
            keep = selection.magnitude_keep(weight, sparsity, self.m_by_n)
            pruned = weight * keep
        elif self.method == "wanda":
            keep = wanda_keep(weight, stat.value, sparsity, self.m_by_n)
            pruned = weight * keep
        else:
            pruned, keep = sparsegpt_prune(
                weight, stat.value, sparsity, self.m_by_n
            )
        view.write(pruned)
        return keep


def _structure(batch):
    return keras.tree.map_structure(
        lambda x: f"{tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', '')}",
        batch,
    )
