"""The TFMOT entry point: `prune_low_magnitude`, and `prune_scope`.

The user's model is never edited unless `inplace=True`: see `cloning` for
how models are copied, `surgery` for how a sublayer is swapped for its
wrapper, and `engine` for the optimizer that prunes during training.
"""

import math
import warnings

import keras

from keras_sparsity import _compat
from keras_sparsity import allocation as alloc
from keras_sparsity import checks
from keras_sparsity import cloning
from keras_sparsity import criteria
from keras_sparsity import registry
from keras_sparsity import surgery
from keras_sparsity.engine import install_engine_on_compile
from keras_sparsity.schedules import PruningSchedule
from keras_sparsity.walk import pruning_wrappers
from keras_sparsity.wrapper import PruneLowMagnitude
from keras_sparsity.wrapper import check_layer
from keras_sparsity.wrapper import check_pruning_params
from keras_sparsity.wrapper import check_regrowth


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    pruning_policy=None,
    sparsity_m_by_n=None,
    *,
    allocation="uniform",
    overrides=None,
    criterion="magnitude",
    regrowth=None,
    strict=False,
    inplace=False,
    **kwargs,
):
    """Wraps a layer, a list of layers or a model for magnitude pruning.

    The returned layers keep a 0/1 mask per kernel. Masks follow
    `pruning_schedule`, counted in optimizer steps, and after every
    optimizer step the pruned weights are exactly zero. Training needs no
    callback (`UpdatePruningStep` is accepted and harmless), and works with
    `fit` and with custom loops on every backend.

    For a model a pruned copy of the same class is returned, holding the
    model's current weights: every layer with prunable kernels, at any
    depth (inside custom layers and nested models too), is wrapped in
    `PruneLowMagnitude`; layers with kernels of an unsupported type stay
    unpruned, with a warning (`unpruned_layers(model)` lists them), or
    raise with `strict=True`. Sequential and functional models are cloned;
    functional subclasses (KerasHub backbones and tasks) and subclassed
    models are rebuilt from their config (or with no arguments), so they
    keep their class, methods and tied weights. The original model is not
    changed. With `inplace=True` the model itself is pruned instead (no
    copy: for large models; not for plain Sequential/functional models,
    which are cheap to clone).

    The copy compiles with a `SparsityOptimizer` around whatever optimizer
    `compile` gets, which prunes in every optimizer step: no callback is
    needed. A compiled model's copy is compiled the same way, with a fresh
    optimizer (so the schedule starts at step 0).

    Args:
        to_prune: A `keras.layers.Layer` (a built one is copied first, so
            the original never changes), a list of layers, or a built
            `keras.Model` of any kind.
        pruning_schedule: A `PruningSchedule`. Defaults to
            `ConstantSparsity(0.5, begin_step=0)`.
        block_size: Pair of ints, the (rows, columns) of the blocks pruned
            together, each kernel read as a matrix of (reduction axes,
            output axes). `(1, 1)` prunes single weights.
        block_pooling_type: `"AVG"` or `"MAX"`, how a block is scored.
        pruning_policy: Optional object with `allow_pruning(layer)` and
            `ensure_model_supports_pruning(model)`; only for models.
        sparsity_m_by_n: `None` or `(m, n)`: m zeros in every n consecutive
            weights along each kernel's input axis.
        allocation: How a model's sparsity is shared among its kernels
            (models only): `"uniform"` (each kernel at the schedule's
            sparsity, as TFMOT), `"global"` (one ranking over all kernels:
            exactly `round(total * (1 - s))` weights kept) or `"erk"`
            (Erdős–Rényi-Kernel: smaller kernels denser, the total exact).
            See the `allocation` module for the formulas.
        overrides: Optional dict (models only) from a regex, matched in
            full against layer names and kernel paths (`"dense_1"`,
            `".*/recurrent_kernel"`), to a final sparsity in [0, 1), a
            `PruningSchedule` for the whole layer, or None to leave it
            dense. The first matching key wins; a key that matches nothing
            is an error. Under `"global"` and `"erk"` the other kernels make
            up for the fixed ones, so the model still meets its target.
        criterion: How weights are ranked: `"magnitude"` (|w|, default),
            `"saliency"` (|w * g| averaged over steps), `"movement"`
            (-sum(w * g)), or a `keras_sparsity.Criterion`.
        regrowth: None, or dynamic sparse training: `sparsity.SET(...)`,
            `sparsity.RigL(...)` or `sparsity.StaticSparse(seed)`, with a
            `ConstantSparsity` schedule: the model is sparse from
            `begin_step` on (random masks) and its connections move (see
            the `dst` module). Not with `allocation="global"` or N:M.
        strict: If True, a layer with kernels of an unsupported type in a
            model is an error instead of a warning.
        inplace: If True, prune the model itself (a functional subclass or
            subclassed model) instead of a copy.
        **kwargs: Passed to each `PruneLowMagnitude` (layers only; for a
            model an unknown keyword is an error).

    Returns:
        A `PruneLowMagnitude` layer, a list of layers, or a pruned model.

    Example:

    ```python
    schedule = sparsity.PolynomialDecay(0.5, 0.8, begin_step=0, end_step=1000)
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, callbacks=[sparsity.UpdatePruningStep()])
    ```
    """
    checks.check_flag("strict", strict)
    checks.check_flag("inplace", inplace)
    _check_policy(pruning_policy)
    params = dict(
        zip(
            (
                "pruning_schedule",
                "block_size",
                "block_pooling_type",
                "sparsity_m_by_n",
            ),
            check_pruning_params(
                pruning_schedule,
                block_size,
                block_pooling_type,
                sparsity_m_by_n,
            ),
        )
    )
    params["criterion"] = criteria.get(criterion)
    params["regrowth"] = check_regrowth(
        regrowth,
        params["pruning_schedule"],
        params["block_size"],
        params["sparsity_m_by_n"],
    )
    if params["regrowth"] is not None and allocation == "global":
        raise ValueError(
            "Argument `regrowth` moves weights within each kernel, at the "
            "kernel's own sparsity: use allocation='uniform' or 'erk'. "
            f"Received: allocation={allocation!r}"
        )
    overrides = alloc.check_allocation(allocation, overrides)
    if params["sparsity_m_by_n"] is not None and allocation != "uniform":
        raise ValueError(
            "Argument `sparsity_m_by_n` fixes every kernel at m/n sparsity "
            "within its own groups, so it cannot be combined with "
            f"allocation={allocation!r}; use allocation='uniform'. Received: "
            f"sparsity_m_by_n={params['sparsity_m_by_n']}"
        )
    if isinstance(to_prune, keras.Model):
        _check_model_arguments(to_prune, inplace, kwargs)
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)
        if (allocation != "uniform" or overrides) and not to_prune.built:
            raise ValueError(
                "Arguments `allocation` and `overrides` need a built model "
                "(its kernels' shapes): call it on a batch first. Received: "
                f"to_prune={to_prune.name!r}"
            )
        pruner = _Pruner(params, pruning_policy, strict, overrides)
        pruned = pruner.prune(to_prune, inplace)
        try:
            alloc.assign_targets(
                pruning_wrappers(pruned),
                allocation,
                overrides,
                params["pruning_schedule"],
                [
                    size
                    for sizes in pruner.left_dense.values()
                    for size in sizes
                ],
            )
            overrides.check_all_used()
        except ValueError:
            if inplace:  # give the user's model back as it was
                from keras_sparsity.strip import strip_pruning

                strip_pruning(pruned, inplace=True)
            raise
        install_engine_on_compile(pruned)
        return pruned
    if allocation != "uniform" or overrides:
        raise ValueError(
            "Arguments `allocation` and `overrides` apply to whole models; "
            "for single layers pass each its own `pruning_schedule`. "
            f"Received: allocation={allocation!r}, overrides with "
            f"{len(overrides.rules)} keys, to_prune of type "
            f"{type(to_prune).__name__}"
        )
    if inplace:
        raise ValueError(
            "Argument `inplace` applies to models only. Received: "
            f"inplace=True with to_prune of type {type(to_prune).__name__}"
        )
    if pruning_policy is not None:
        raise ValueError(
            "Argument `pruning_policy` applies to whole models only; to "
            "prune single layers, choose them yourself. Received: "
            f"pruning_policy={pruning_policy!r} with to_prune of type "
            f"{type(to_prune).__name__}"
        )
    if isinstance(to_prune, (list, tuple)):
        for layer in to_prune:
            if not isinstance(layer, keras.layers.Layer):
                raise TypeError(
                    "Argument `to_prune` must be a layer, a list of layers or "
                    "a model; a list must hold only keras.layers.Layer "
                    f"instances. Received: to_prune holding {layer!r} of "
                    f"type {type(layer).__name__}"
                )
            if not isinstance(layer, PruneLowMagnitude):
                check_layer(layer)
        return [
            layer
            if isinstance(layer, PruneLowMagnitude)
            else PruneLowMagnitude(_own_copy(layer), **params, **kwargs)
            for layer in to_prune
        ]
    if isinstance(to_prune, keras.layers.Layer):
        check_layer(to_prune)
        return PruneLowMagnitude(_own_copy(to_prune), **params, **kwargs)
    raise ValueError(
        "`prune_low_magnitude` can only prune an object of the following "
        "types: keras.Sequential, a functional keras.Model, "
        "keras.layers.Layer, or a list of keras.layers.Layer. "
        f"Received: to_prune of type {type(to_prune).__name__}"
    )


def _check_policy(policy):
    if policy is not None and (
        isinstance(policy, type)
        or not all(
            callable(getattr(policy, method, None))
            for method in ("allow_pruning", "ensure_model_supports_pruning")
        )
    ):
        raise TypeError(
            "Argument `pruning_policy` must be None or a `PruningPolicy` "
            "instance (an object with `allow_pruning(layer)` and "
            "`ensure_model_supports_pruning(model)`), e.g. "
            "`sparsity.PruneForLatencyOnXNNPack()`. Received: "
            f"pruning_policy={policy!r}"
        )


def _check_model_arguments(model, inplace, kwargs):
    if kwargs:
        raise TypeError(
            "`prune_low_magnitude` got unexpected keyword arguments for a "
            f"model: {sorted(kwargs)}. Accepted: pruning_schedule, "
            "block_size, block_pooling_type, pruning_policy, "
            "sparsity_m_by_n, allocation, overrides, criterion, regrowth, "
            "strict, "
            f"inplace. Received: {kwargs!r}"
        )
    if pruning_wrappers(model):
        raise ValueError(
            "The model passed to `prune_low_magnitude` is already pruned (it "
            "holds PruneLowMagnitude layers). Call `strip_pruning` first to "
            f"prune it again with other settings. Received: to_prune="
            f"{model.name!r}"
        )
    if inplace and _compat.is_plain_graph(model):
        raise ValueError(
            "`inplace=True` prunes functional subclasses (such as KerasHub "
            "models) and subclassed models; a plain Sequential or "
            "functional model is always pruned as a copy, since its config "
            "must name the pruned layers. Received: inplace=True with "
            f"to_prune={type(model).__name__} named {model.name!r}"
        )
    if inplace and not model.built:
        raise ValueError(
            "`inplace=True` needs a built model: call it on a batch first. "
            f"Received: to_prune={model.name!r}"
        )


def _own_copy(layer):
    """A built layer is copied with its weights before it is wrapped, so
    that training the pruned layer never changes the user's (TFMOT's
    `clone_model(base, clone_function=...)` pattern passes the base
    model's own layers); an unbuilt layer holds no state and is used as
    is."""
    return cloning.built_copy(layer) if layer.built else layer


class _Pruner:
    """Wraps every prunable layer of a model (a copy, or the model itself)."""

    def __init__(self, params, policy, strict, overrides):
        self.params = params
        self.policy = policy
        self.strict = strict
        self.overrides = overrides
        self.left_dense = {}  # id(layer) -> its kernel sizes, left dense
        self.skipped = []
        self.wrapped = {}  # id(layer) -> its wrapper: shared layers once
        self.containers = []  # copies whose sublayers still need wrapping

    def prune(self, model, inplace):
        if inplace:
            self._wrap_sublayers(model)
            pruned = model
        else:
            pruned = self._copy(model)
        if self.skipped:
            warnings.warn(
                "prune_low_magnitude left these layers unpruned because "
                f"their type is not supported: {', '.join(self.skipped)}. "
                "Implement `PrunableLayer` in a custom layer to prune it.",
                stacklevel=3,
            )
        return pruned

    def _copy(self, model):
        if _compat.is_plain_graph(model):
            clone = cloning.clone_graph(model, self._clone_layer)
            containers, self.containers = self.containers, []
            for container in containers:
                self._wrap_sublayers(container)
            return clone
        copy = cloning.rebuilt_copy(model, "to_prune")
        cloning.copy_weights(model, copy)
        self._wrap_sublayers(copy)
        return copy

    def _wants(self, layer):
        return registry.is_prunable(layer) and (
            self.policy is None or self.policy.allow_pruning(layer)
        ) and self._layer_params(layer) is not None

    def _layer_params(self, layer):
        """The wrapper's arguments for `layer`, or None if `overrides`
        leave it dense."""
        kernels = (
            [p.variable for p in registry.prunable_weights(layer)]
            if layer.built
            else []
        )
        found, value = self.overrides.for_layer(layer, kernels)
        if not found:
            return self.params
        if value is None:
            self.left_dense[id(layer)] = [math.prod(k.shape) for k in kernels]
            return None
        if isinstance(value, PruningSchedule):
            return dict(self.params, pruning_schedule=value)
        return self.params

    def _note_skipped(self, layer):
        if (
            not registry.own_kernels(layer)
            or self.policy is not None
            or registry.is_prunable(layer)  # left dense by `overrides`
        ):
            return
        if self.strict:
            check_layer(layer)  # raises: the copy is dropped, the model kept
        self.skipped.append(f"{layer.name} ({type(layer).__name__})")

    def _clone_layer(self, layer):
        """A layer of a plain graph model: its copy, wrapped if prunable."""
        if not isinstance(layer, keras.layers.Layer):  # keras.ops in a graph
            return layer, None
        if isinstance(layer, keras.Model):
            return self._copy(layer), None
        if self._wants(layer):
            copy = cloning.fresh_copy(layer)
            wrapper = PruneLowMagnitude(copy, **self._layer_params(layer))
            return wrapper, _setter(layer, copy)
        copy = cloning.copy_or_share(layer)
        if copy is layer:
            return layer, None
        if _compat.sublayers(layer):
            self.containers.append(copy)
        else:
            self._note_skipped(layer)
        return copy, _setter(layer, copy)

    def _wrap_sublayers(self, parent):
        """Wraps, in place, every prunable sublayer of `parent` at any
        depth; attention layers are opened up, so that their projections
        are wrapped and the attention layer keeps its own call signature."""
        for child in _compat.sublayers(parent):
            if isinstance(child, PruneLowMagnitude):
                continue
            if id(child) in self.wrapped:
                surgery.replace(parent, child, self.wrapped[id(child)])
            elif isinstance(child, keras.Model) or (
                isinstance(child, keras.layers.MultiHeadAttention)
            ):
                self._wrap_sublayers(child)
            elif self._wants(child):
                wrapper = PruneLowMagnitude(child, **self._layer_params(child))
                if child.built:
                    wrapper.build()
                self.wrapped[id(child)] = wrapper
                surgery.replace(parent, child, wrapper)
            elif _compat.sublayers(child):
                self._wrap_sublayers(child)
            else:
                self._note_skipped(child)


def _setter(layer, copy):
    """Writes `layer`'s weights into `copy` once the clone is built."""
    if not layer.built:
        return None
    weights = layer.get_weights()
    return lambda: copy.set_weights(weights)


def prune_scope():
    """A custom-object scope naming this library's classes (TFMOT parity).

    Saved pruned models load without it: every class is registered with
    Keras. It is kept so that code written for TFMOT runs unchanged.

    Example: `with sparsity.prune_scope(): model = keras.saving.load_model(p)`
    """
    return keras.saving.custom_object_scope(
        {"PruneLowMagnitude": PruneLowMagnitude}
    )
