"""`SparsityOptimizer`: the one component that prunes, once per optimizer step.

Why an optimizer wrapper. Only the optimizer step sees, at once, every
pruned kernel, its gradient and the step counter; and on JAX only what
`stateless_apply` returns (the trainable variables and `optimizer.variables`)
survives a jitted train step. So pruning runs inside the optimizer, the way
Keras' own `LossScaleOptimizer` keeps its loss scale:

* `SparsityOptimizer(inner)` finds the masks among the variables it is built
  on (each mask knows its wrapper and kernel), builds `inner` on the other
  variables, and keeps its own state (one "pruned yet" flag per schedule) as
  optimizer variables, which every backend's train step carries.
* Each `apply` lets `inner` update, then evaluates each schedule once at
  the step, recomputes the masks that are due and writes `kernel * mask`:
  pruned weights are exactly zero after every step, whether or not the
  layer's output reached the loss (masks no longer depend on a gradient).
  Gradients are not masked: masking them cost 6 % more step time on the
  JAX MLP of `benchmarks/train_overhead.py` (1.27 vs 1.21 pruned/dense, side
  by side), and the kernels are masked after the update anyway; the inner
  optimizer's slots at pruned positions are therefore not zero, which only
  matters to a weight that comes back (it restarts at exactly zero).
* `finalize_variable_values` (the end of `fit`, where EMA weights are
  written) masks the kernels again.

What is computed together: kernels are grouped (`_Group`): every kernel of
one global ranking (`allocation="global"`: same schedule, target,
criterion and pattern) is one group whose masks come from one selection
over all of them; every other kernel is a group of its own. Each kernel's
sparsity is its final target scaled by the schedule's progress
(`PruneLowMagnitude.kernel_sparsity`). A stateful criterion (saliency,
movement) keeps one score tensor per kernel as an optimizer variable,
updated from the gradients before the inner update; dynamic sparse
training (`dst`) adds two counters per kernel and resets the inner
optimizer's slots where weights grow, in the same branch that writes the
masks.

Where masks live: in the wrappers, as model variables that are *trainable*
(so JAX's stateless step returns them) but never trained: this optimizer
writes them, and no gradient reaches them (the forward pass does not read
them: the kernels themselves are exactly sparse). The same on every backend.
A plain optimizer applied to a pruned kernel raises (`EngineGuard`), so
a pruned model can never silently train dense.
"""

import contextlib
import inspect
import json
import warnings

import keras
from keras import ops

from keras_sparsity import _backend
from keras_sparsity import _compat
from keras_sparsity import allocation
from keras_sparsity import criteria
from keras_sparsity import dst
from keras_sparsity import masks as mask_math

CHANNELS = "channels"  # the ranking of `prune_channels`' wrappers
_ACTIVE = []  # SparsityOptimizers whose `apply` is running (trace time)


@contextlib.contextmanager
def _engine_active(optimizer):
    _ACTIVE.append(optimizer)
    try:
        yield
    finally:
        _ACTIVE.pop()


class EngineGuard:
    """Constraint on a pruned kernel: only a `SparsityOptimizer` may update
    it. Keeps the layer's own constraint, applied first."""

    def __init__(self, inner=None):
        self.inner = inner

    def __call__(self, weight):
        if not _ACTIVE:
            raise RuntimeError(NOT_ENGINE_MSG)
        return weight if self.inner is None else self.inner(weight)


NOT_ENGINE_MSG = (
    "A pruned kernel was updated by an optimizer that is not a "
    "`keras_sparsity.SparsityOptimizer`, so its mask would not be applied. "
    "Models returned by `prune_low_magnitude` wrap the optimizer when "
    "compiled; for a model assembled from pruned layers, pass "
    "`callbacks=[sparsity.UpdatePruningStep()]` to `fit`, or compile with "
    "`optimizer=sparsity.SparsityOptimizer('adam')`; in a custom training "
    "loop, use `sparsity.SparsityOptimizer(optimizer)`."
)


def mask_owner(variable):
    """`(wrapper, index)` if `variable` is a pruning mask, else None."""
    return getattr(variable, "_keras_sparsity_mask_of", None)


def as_sparsity_optimizer(optimizer):
    """`optimizer` (a name, config or instance) wrapped unless it already
    prunes (itself, or inside a `LossScaleOptimizer`)."""
    optimizer = keras.optimizers.get(optimizer)
    return optimizer if _prunes(optimizer) else SparsityOptimizer(optimizer)


def plain_optimizer(optimizer):
    """The optimizer a `SparsityOptimizer` wraps (for stripped models)."""
    if isinstance(optimizer, dict) and optimizer.get("registered_name") == (
        "keras_sparsity>SparsityOptimizer"
    ):
        return optimizer["config"]["inner_optimizer"]
    return optimizer


class _Untracked:
    """Holds variables out of sight of the optimizer's tracker (which would
    count a list of model variables assigned to it as its own)."""

    def __init__(self, variables):
        self.variables = list(variables)


class _Entry:
    """One pruned kernel: its variable, mask, wrapper and index there, and
    its criterion's state (an optimizer variable, or None)."""

    def __init__(self, wrapper, index):
        self.wrapper = wrapper
        self.index = index
        self.kernel = wrapper.pruned_weights[index]
        self.mask = wrapper.masks[index]
        self.criterion = wrapper.weight_criterion(index)
        self.regrowth = wrapper.regrowth
        self.state = None
        self.grad = None  # this step's gradient, for RigL (trace time)
        self.slots = []  # the inner optimizer's state of the kernel
        self.counts = None  # (dropped, grown) at the last DST update
        self.salt = None  # the DST random stream's, see `dst.kernel_salt`


class _Group:
    """Kernels whose masks are computed together at their schedule's steps:
    one kernel, or every kernel of one global ranking."""

    def __init__(self, entries):
        self.entries = entries
        first = entries[0]
        self.schedule_index = first.schedule_index
        self.criterion = first.criterion
        self.is_global = first.wrapper.ranking(first.index) == (
            allocation.GLOBAL
        )
        # Magnitude ranks the masked kernels themselves (TFMOT's masks, bit
        # for bit); other criteria rank scores.
        self.scored = not isinstance(self.criterion, criteria.Magnitude)
        self.regrowth = first.regrowth

    def new_masks(self, masked, old, sparsity, step):
        """New masks for the masked kernels `masked` (old masks `old`) when
        the group's schedule is at `sparsity`."""
        first = self.entries[0]
        sparsity = first.wrapper.kernel_sparsity(first.index, sparsity)
        if self.regrowth is not None:
            return [self._regrown(masked[0], old[0], sparsity, step)]
        scores = masked
        if self.scored:
            scores = criteria.ranked_scores(
                self.criterion,
                [e.state for e in self.entries],
                masked,
                old,
            )
        if self.is_global:
            views = [
                e.wrapper.to_canonical(e.index, score)
                for e, score in zip(self.entries, scores)
            ]
            found = mask_math.global_masks(
                views,
                sparsity,
                block_size=first.wrapper.block_size,
                pooling=first.wrapper.block_pooling_type,
                scored=self.scored,
            )
            return [
                e.wrapper.from_canonical(e.index, mask)
                for e, mask in zip(self.entries, found)
            ]
        return [
            first.wrapper.new_mask(
                first.index, scores[0], sparsity, scored=self.scored
            )
        ]

    def _regrown(self, masked, old, sparsity, step):
        """A dynamic sparse training update of the group's one kernel, on
        its weights or, with blocks, on its blocks."""
        entry = self.entries[0]
        wrapper, index = entry.wrapper, entry.index
        units = {"old": old, "magnitude": ops.abs(masked)}
        if entry.regrowth.grows_by_gradient:
            units["gradient"] = ops.abs(entry.grad)
        blocks = wrapper.block_size != (1, 1)
        if blocks:
            pooling = {"old": "MAX"}
            units = {
                name: mask_math._block_scores(
                    wrapper.to_canonical(index, value),
                    wrapper.block_size,
                    pooling.get(name, "AVG"),
                    True,
                )
                for name, value in units.items()
            }
        new = dst.new_mask(
            entry.regrowth,
            units,
            sparsity,
            step,
            wrapper.pruning_schedule.begin_step,
            entry.salt,
        )
        if blocks:
            canonical = wrapper.to_canonical(index, old)
            new = wrapper.from_canonical(
                index,
                mask_math._expand_blocks(
                    new, canonical.shape, wrapper.block_size
                ),
            )
        return new

    def due(self, should_prune, step):
        """Whether the group's masks are recomputed at `step`."""
        if self.regrowth is None:
            return should_prune
        first = self.entries[0]
        updates = self.regrowth.updates_at(
            step, first.wrapper.pruning_schedule.begin_step
        )
        if isinstance(should_prune, bool) and isinstance(updates, bool):
            return should_prune or updates
        return ops.logical_or(should_prune, updates)

    def after_update(self):
        """`(variables, compute)` for state that changes with the masks:
        `compute(old_masks, new_masks)` gives the variables' new values (the
        inner optimizer's slots reset where weights grew, and the counts of
        dropped and grown weights); None when there is none."""
        if self.regrowth is None:
            return None
        entry = self.entries[0]
        variables = list(entry.slots) + list(entry.counts)

        def compute(olds, news):
            old, new = olds[0], news[0]
            grown = new * (1.0 - old)
            values = [
                slot.value * ops.cast(1.0 - grown, slot.dtype)
                for slot in entry.slots
            ]
            dropped = ops.cast(ops.sum(old * (1.0 - new)), "int32")
            return values + [dropped, ops.cast(ops.sum(grown), "int32")]

        return variables, compute


class _ChannelGroup(_Group):
    """Every variable of one channel ranking (`prune_channels`): all the
    model's channel groups, selected together by the wrappers'
    `channel_masks`."""

    def new_masks(self, masked, old, sparsity, step):
        values = [
            masked_value if e.state is None else e.state.value * old_mask
            for e, masked_value, old_mask in zip(self.entries, masked, old)
        ]
        wrapper = self.entries[0].wrapper
        return wrapper.channel_masks(
            [(e.wrapper, e.index) for e in self.entries], values, sparsity
        )


def _group_entries(entries):
    """Entries grouped: each global ranking (same schedule, target,
    criterion and pattern) is one group, every other kernel its own; the
    variables of one channel ranking are one group."""
    groups = {}
    for entry in entries:
        wrapper = entry.wrapper
        key = ("local", id(entry))
        if wrapper.ranking(entry.index) == CHANNELS:
            key = (CHANNELS, entry.schedule_index, wrapper.group_key())
        elif wrapper.ranking(entry.index) == allocation.GLOBAL:
            key = (
                "global",
                entry.schedule_index,
                wrapper.kernel_targets[entry.index][0],
                _serialized_key(entry.criterion),
                wrapper.block_size,
                wrapper.block_pooling_type,
            )
        groups.setdefault(key, []).append(entry)
    return [
        (_ChannelGroup if key[0] == CHANNELS else _Group)(members)
        for key, members in groups.items()
    ]


@keras.saving.register_keras_serializable(package="keras_sparsity")
class SparsityOptimizer(keras.optimizers.Optimizer):
    """Wraps an optimizer so that each of its steps also prunes.

    Every model returned by `prune_low_magnitude` compiles with it
    automatically (whatever optimizer you pass to `compile`), and
    `UpdatePruningStep` puts it in place for models assembled from pruned
    layers. Use it yourself in custom training loops. Once per update it
    updates the layers' criteria from the gradients (saliency, movement),
    lets `inner_optimizer` update, recomputes the masks that each layer's
    schedule (or dynamic sparse training method) says are due, counting
    `inner_optimizer.iterations`, and multiplies every pruned kernel by its
    mask.

    Args:
        inner_optimizer: A `keras.optimizers.Optimizer`, or a name or config
            that `keras.optimizers.get` accepts (e.g. `"adam"`).
        name: Optional name.

    Example:

    ```python
    optimizer = sparsity.SparsityOptimizer(keras.optimizers.Adam(1e-3))
    with tf.GradientTape() as tape:
        loss = loss_fn(y, pruned(x, training=True))
    grads = tape.gradient(loss, pruned.trainable_variables)
    optimizer.apply(grads, pruned.trainable_variables)
    ```
    """

    def __init__(self, inner_optimizer, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                "`SparsityOptimizer` takes only `inner_optimizer` and `name`; "
                "set learning rate, clipping, EMA or weight decay on the "
                f"inner optimizer. Received: {sorted(kwargs)}"
            )
        inner = inner_optimizer
        if isinstance(inner, (str, dict)):
            try:
                inner = keras.optimizers.get(inner)
            except ValueError as error:
                raise ValueError(
                    "Argument `inner_optimizer` must be a Keras optimizer or "
                    f"a name such as 'adam' ({error}). Received: "
                    f"inner_optimizer={inner_optimizer!r}"
                ) from None
        if _prunes(inner):
            raise ValueError(
                "Argument `inner_optimizer` already prunes (a "
                "SparsityOptimizer): pass the optimizer it wraps. Received: "
                f"inner_optimizer={inner_optimizer!r}"
            )
        if not isinstance(inner, keras.optimizers.Optimizer):
            raise TypeError(
                "Argument `inner_optimizer` must be a Keras optimizer or a "
                "name such as 'adam'. Received: "
                f"inner_optimizer={inner_optimizer!r}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner
        self._entries = []
        self._groups = []
        self._scoring = []
        self._regrowing = []
        self._schedules = []
        self._seen_pruned = set()

    def build(self, var_list):
        entries, others = [], []
        for variable in var_list:
            owner = mask_owner(variable)
            if owner is None:
                others.append(variable)
            else:
                entries.append(_Entry(*owner))
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(others)
            self._inner = _Untracked(others)
        else:  # built on the whole model already (`ensure_engine`)
            self._inner = _Untracked(var_list)
        self._entries = entries
        # Equal schedules are one schedule, also after a model is loaded
        # (where each wrapper holds its own copy).
        keys = {}
        for entry in entries:
            key = _serialized_key(entry.wrapper.pruning_schedule)
            entry.schedule_index = keys.setdefault(key, len(keys))
        self._schedules = [None] * len(keys)
        for entry in entries:
            self._schedules[entry.schedule_index] = (
                entry.wrapper.pruning_schedule
            )
        self._pruned_once = [
            self.add_variable(
                shape=(),
                dtype="int32",
                initializer="zeros",
                aggregation="only_first_replica",
                name=f"pruned_once_{i}",
            )
            for i in range(len(self._schedules))
        ]
        for i, entry in enumerate(entries):
            if entry.criterion.stateful:
                entry.state = self.add_variable(
                    shape=entry.kernel.shape,
                    dtype="float32",
                    initializer="zeros",
                    name=f"score_{i}",
                    layout=getattr(entry.kernel, "_layout", None),
                )
        for i, entry in enumerate(entries):
            if entry.regrowth is None:
                continue
            entry.salt = dst.kernel_salt(i, entry.wrapper, entry.index)
            entry.slots = _compat.optimizer_slots(
                self.inner_optimizer, entry.kernel
            )
            entry.counts = [
                self.add_variable(
                    shape=(),
                    dtype="int32",
                    initializer="zeros",
                    aggregation="only_first_replica",
                    name=f"{kind}_{i}",
                )
                for kind in ("dropped", "grown")
            ]
        self._groups = _group_entries(entries)
        self._scoring = [e for e in entries if e.state is not None]
        self._regrowing = [e for e in entries if e.regrowth is not None]
        super().build(var_list)
        _warn_if_past_schedules(self)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    @property
    def pruned_kernels(self):
        """`(kernel, mask)` pairs this optimizer prunes, in build order."""
        return [(entry.kernel, entry.mask) for entry in self._entries]

    @property
    def regrowth_counts(self):
        """`(kernel, dropped, grown)` per kernel under dynamic sparse
        training: the weights its last update dropped and grew (int32
        variables)."""
        return [
            (entry.kernel, *entry.counts) for entry in self._regrowing
        ]

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            self.build(trainable_variables)
            self.built = True
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        inner_grads, inner_variables = [], []
        for grad, variable in zip(grads, trainable_variables):
            if mask_owner(variable) is None:
                inner_grads.append(grad)
                inner_variables.append(variable)
        # Read before the inner update increments it (torch aliases).
        step = _backend.snapshot(self.inner_optimizer.iterations)
        by_id = dict(zip(map(id, trainable_variables), grads))
        if self._scoring:
            self._update_scores(lambda v: by_id.get(id(v)))
        for entry in self._regrowing:
            entry.grad = by_id.get(id(entry.kernel))
        with _engine_active(self):
            if inner_grads:
                self.inner_optimizer.apply(inner_grads, inner_variables)
            self._update_masks(step)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """`apply` for JAX's stateless train step: the inner optimizer runs
        its own `stateless_apply` (so its JAX-specific paths apply), then
        the masks are updated in a stateless scope."""
        if not self.built:
            raise ValueError(
                "To call `stateless_apply`, SparsityOptimizer must be built: "
                "call `optimizer.build(model.trainable_variables)` first."
            )
        own_count = len(self._variables)
        own, inner_state = (
            optimizer_variables[:own_count],
            optimizer_variables[own_count:],
        )
        values = {
            id(v): value
            for v, value in zip(self._trainable_variables, trainable_variables)
        }
        grads = dict(zip(map(id, self._trainable_variables), grads))
        inner_grads = [grads[id(v)] for v in self._inner.variables]
        inner_mapping = list(zip(self.inner_optimizer.variables, inner_state))
        with keras.StatelessScope(state_mapping=inner_mapping):
            step = ops.convert_to_tensor(self.iterations)
        for entry in self._regrowing:
            entry.grad = grads.get(id(entry.kernel))
        if self._scoring:  # on the weights before the inner update
            mapping = [
                (v, values[id(v)]) for v in self._trainable_variables
            ] + list(zip(self._variables, own))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                self._update_scores(lambda v: grads.get(id(v)))
            own = [scope.get_current_value(v) for v in self._variables]
        with _engine_active(self):
            updated, inner_state = self.inner_optimizer.stateless_apply(
                inner_state,
                inner_grads,
                [values[id(v)] for v in self._inner.variables],
            )
            for variable, value in zip(self._inner.variables, updated):
                values[id(variable)] = value
            # The inner optimizer's state too: dynamic sparse training
            # resets its slots where weights grow.
            mapping = (
                [(v, values[id(v)]) for v in self._trainable_variables]
                + list(zip(self._variables, own))
                + list(zip(self.inner_optimizer.variables, inner_state))
            )
            with keras.StatelessScope(state_mapping=mapping) as scope:
                self._update_masks(step)
        return (
            [scope.get_current_value(v) for v in self._trainable_variables],
            [
                scope.get_current_value(v)
                for v in self._variables + self.inner_optimizer.variables
            ],
        )

    def _update_scores(self, grad_of):
        """One step of each stateful criterion, on the kernels' values
        before the inner optimizer updates them."""
        for entry in self._scoring:
            grad = grad_of(entry.kernel)
            if grad is None:  # a frozen kernel
                continue
            entry.state.assign(
                entry.criterion.update(
                    entry.state.value, entry.kernel.value, grad
                )
            )

    def _update_masks(self, step):
        """Recomputes the masks that are due at `step`; masks every kernel."""
        due = _backend.schedules_at(
            self._schedules, self._pruned_once, step, self._seen_pruned
        )
        for group in self._groups:
            should_prune, sparsity = due[group.schedule_index]
            _backend.update_masks(
                group.entries,
                group.due(should_prune, step),
                lambda masked, old, g=group, s=sparsity: g.new_masks(
                    masked, old, s, step
                ),
                group.after_update(),
            )

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(
            [v for v in var_list if mask_owner(v) is None]
        )
        for entry in self._entries:
            entry.kernel.assign(
                entry.kernel * ops.cast(entry.mask, entry.kernel.dtype)
            )

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)


def _serialized_key(obj):
    """Equal for objects of one class with equal configs (not
    `serialize_keras_object`, which adds a shared-object id while a model
    is saved or loaded)."""
    kind = type(obj)
    return json.dumps(
        [kind.__module__, kind.__qualname__, obj.get_config()],
        sort_keys=True,
        default=repr,
    )


def _warn_if_past_schedules(optimizer):
    """Schedules that have ended before the first step prune once, at that
    step, to their final sparsity; say so."""
    step = _backend.read_int(lambda: optimizer.inner_optimizer.iterations)
    if step is None:
        return
    for schedule in optimizer._schedules:
        end_step = getattr(schedule, "end_step", -1)
        if end_step is not None and 0 <= end_step < step:
            warnings.warn(
                f"The optimizer is already at step {step}, past end_step="
                f"{end_step} of {schedule!r}: the masks are set once, at the "
                "next step, to the schedule's final sparsity.",
                stacklevel=3,
            )


def _prunes(optimizer):
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return isinstance(optimizer, SparsityOptimizer)


def install_engine_on_compile(model):
    """Makes `model.compile` wrap any optimizer in a `SparsityOptimizer`.

    An instance attribute, so the user's class is untouched; a compiled
    model is compiled again, with its own settings, through it.
    """

    def compile(*args, **kwargs):
        if args:
            optimizer, args = args[0], args[1:]
        else:
            optimizer = kwargs.pop("optimizer", _default_optimizer(model))
        try:
            optimizer = as_sparsity_optimizer(optimizer)
        except ValueError:  # a value only the model's class knows ("auto")
            pass
        type(model).compile(model, optimizer, *args, **kwargs)
        ensure_engine(model)

    object.__setattr__(model, "compile", compile)
    if model.compiled:
        compile(
            **keras.saving.deserialize_keras_object(model.get_compile_config())
        )


def _default_optimizer(model):
    parameter = inspect.signature(type(model).compile).parameters.get(
        "optimizer"
    )
    return "rmsprop" if parameter is None else parameter.default


def ensure_engine(model):
    """Puts a `SparsityOptimizer` around a compiled model's optimizer.

    Called when training starts (`UpdatePruningStep`) for a model assembled
    by hand from pruned layers and compiled with a plain optimizer. Returns
    True when it replaced the optimizer.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or _prunes(optimizer):
        return False
    engine = SparsityOptimizer(optimizer)
    if optimizer.built:
        engine.build(model.trainable_variables)
    model.optimizer = engine
    model.make_train_function(force=True)
    return True
