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

import time

import keras

from keras_sparsity import _compat
from keras_sparsity import cloning
from keras_sparsity.checks import check_flag
from keras_sparsity.oneshot import calibration
from keras_sparsity.oneshot import capture
from keras_sparsity.oneshot import recovery
from keras_sparsity.oneshot import selection
from keras_sparsity.oneshot import summary
from keras_sparsity.oneshot import targets
from keras_sparsity.oneshot.owl import OutlierWeighted
from keras_sparsity.oneshot.sparsegpt import sparsegpt_prune
from keras_sparsity.oneshot.wanda import wanda_keep


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
    verbose="auto",
    return_summary=False,
):
    """Prunes a trained model in one shot from a few calibration batches.

    No training: each chosen Dense and EinsumDense kernel (attention
    query/key/value/output and feed-forward projections of KerasHub
    blocks) and Conv1D/Conv2D kernel, read as a matrix `W` of (outputs,
    inputs), is pruned from the inputs it sees on `calibration_data` (a
    convolution's inputs are its input patches, one per output position:
    `W` is `(filters, prod(kernel_size) * channels)`):

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
            kernel's input size (a convolution's input channels, along
            which its groups run) must be a multiple of `n`.
        layers: Which layers to prune: None (every Dense, EinsumDense,
            and ungrouped Conv1D and Conv2D),
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
        verbose: `"auto"` (default), True/1 or False/0: a progress bar
            over the blocks (rich, on stderr); `"auto"` shows it when
            Keras' interactive logging is on and the output is a terminal
            or a notebook.
        return_summary: If True, also return a `OneShotSummary`: per
            kernel its exact sparsity, its reconstruction error
            `||W X - W' X|| / ||W X||` on the calibration inputs it saw
            and its time, per block its time; `print` it for a table.
            The error needs `X^T X` for every kernel, so magnitude and
            Wanda then capture it as SparseGPT does (one `d_in x d_in`
            matrix per kernel of a block, and its compute).

    Returns:
        The pruned model, of `model`'s class (a copy unless `inplace`),
        with exactly sparse kernels; with `return_summary=True`, a pair
        `(pruned model, OneShotSummary)`.

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
    targets.check_arguments(method, sparsity, sparsity_m_by_n, allocation)
    summary.check_verbose(verbose)
    for name, flag in (
        ("return_summary", return_summary),
        ("inplace", inplace),
        ("keep_masks", keep_masks),
    ):
        check_flag(name, flag)
    m_by_n = None if sparsity_m_by_n is None else tuple(sparsity_m_by_n)
    if m_by_n is not None:
        sparsity = m_by_n[0] / m_by_n[1]
    if allocation == "owl":
        allocation = OutlierWeighted()
    targets.check_model(model)
    # Raises before anything is copied.
    targets.kernel_views(model, layers, m_by_n)
    needs_data = method != "magnitude" or allocation != "uniform"
    batches = (
        calibration.calibration_batches(calibration_data)
        if needs_data or calibration_data is not None
        else None
    )
    start = time.perf_counter()
    work = model if inplace else _copy(model)
    pruning = _Pruning(work, layers, method, sparsity, m_by_n)
    keeps = pruning.run(batches, allocation, verbose, return_summary)
    if keep_masks:
        work = recovery.attach_masks(work, keeps)
    if not return_summary:
        return work
    return work, summary.OneShotSummary(
        method=method,
        sparsity_m_by_n=m_by_n,
        layers=tuple(pruning.layer_results),
        blocks=tuple(pruning.block_results),
        seconds=time.perf_counter() - start,
    )


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
        self.views = targets.kernel_views(model, layers, m_by_n)
        self.layer_results = []
        self.block_results = []

    def run(self, batches, allocation, verbose="auto", measure=False):
        """Prunes block after block; returns the masks by `id(layer)`.

        With `measure`, `layer_results` and `block_results` are filled
        (the error needs every kernel's `X^T X`)."""
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
        title = f"one-shot {self.method}"
        with summary.progress_bar(verbose, len(blocks), title) as advance:
            for (block, members), sparsity in zip(blocks, sparsities):
                start = time.perf_counter()
                stats = self._block_statistics(block, members, batches, measure)
                for view, stat in zip(members, stats):
                    keep = self._prune_view(view, stat, sparsity, measure)
                    keeps[id(view.layer)] = (
                        view.layer.name,
                        view.to_kernel(keep),
                    )
                name = block.path or block.name
                if measure:
                    for result in self.layer_results[-len(members) :]:
                        result["block"] = name
                    self.block_results.append(
                        summary.BlockResult(
                            block=name,
                            num_layers=len(members),
                            target_sparsity=float(sparsity),
                            seconds=time.perf_counter() - start,
                        )
                    )
                advance(name)
        self.layer_results = [
            summary.LayerResult(**result) for result in self.layer_results
        ]
        return keeps

    def _block_statistics(self, block, members, batches, measure):
        if batches is None or (self.method == "magnitude" and not measure):
            return [None] * len(members)
        # Wanda reads its norms off the Hessian's diagonal when measuring.
        kind = "norms"
        if self.method == "sparsegpt" or measure:
            kind = "hessian"
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

    def _prune_view(self, view, stat, sparsity, measure):
        start = time.perf_counter()
        weight = view.read()
        if self.method == "magnitude":
            keep = selection.magnitude_keep(weight, sparsity, self.m_by_n)
            pruned = weight * keep
        elif self.method == "wanda":
            norms = stat.value
            if stat.kind == "hessian":
                norms = keras.ops.diagonal(norms)
            keep = wanda_keep(weight, norms, sparsity, self.m_by_n)
            pruned = weight * keep
        else:
            pruned, keep = sparsegpt_prune(
                weight, stat.value, sparsity, self.m_by_n
            )
        if measure:
            nonzero = keras.ops.cast(keras.ops.not_equal(pruned, 0), "int32")
            num_nonzeros = int(
                keras.ops.convert_to_numpy(keras.ops.sum(nonzero))
            )
            seconds = time.perf_counter() - start
            # Before the write: on torch `weight` can share its storage.
            error = None
            if stat is not None:
                error = summary.reconstruction_error(
                    weight, pruned, stat.value
                )
            size = view.num_outputs * view.num_inputs
            self.layer_results.append(
                dict(
                    layer=view.name,
                    block="",
                    shape=(view.num_outputs, view.num_inputs),
                    num_parameters=size,
                    num_nonzeros=num_nonzeros,
                    sparsity=1.0 - num_nonzeros / size,
                    target_sparsity=float(sparsity),
                    reconstruction_error=error,
                    seconds=seconds,
                )
            )
        view.write(pruned)
        return keep


def _structure(batch):
    return keras.tree.map_structure(
        lambda x: f"{tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', '')}",
        batch,
    )
