"""`PruneLowMagnitude`: the layer wrapper that holds a mask per prunable weight.

The wrapper owns the pruning options of its layer (schedule, pattern) and a
float32 0/1 mask per prunable weight; it computes a new mask on request
(`compute_mask`). It does not decide when to prune and its forward pass
does not read the masks: `engine.SparsityOptimizer` writes masks and
multiplies the kernels by them in every optimizer step, so the kernels
themselves are exactly sparse. Masks are trainable variables only so that
JAX's stateless train step carries them; no gradient ever reaches them.
"""

import inspect
import math
import numbers

import keras
from keras import ops

from keras_sparsity import allocation as alloc
from keras_sparsity import criteria
from keras_sparsity import masks as mask_math
from keras_sparsity import registry
from keras_sparsity.engine import EngineGuard
from keras_sparsity.schedules import ConstantSparsity
from keras_sparsity.schedules import PruningSchedule


def check_pruning_params(
    pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n
):
    """Validates the pruning arguments; returns them normalised.

    Raises `TypeError`/`ValueError` naming the argument and the accepted
    values, before any layer or model is touched.
    """
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0)
    if not isinstance(pruning_schedule, PruningSchedule):
        raise TypeError(
            "Argument `pruning_schedule` must be a "
            "`keras_sparsity.PruningSchedule`, e.g. "
            "`PolynomialDecay(0.5, 0.8, begin_step=0, end_step=1000)`. "
            f"Received: pruning_schedule={pruning_schedule!r}"
        )
    block_size = _pair_of_ints(
        "block_size", block_size, "e.g. (1, 1) for no blocks or (1, 4)"
    )
    if min(block_size) < 1:
        raise ValueError(
            "Argument `block_size` must hold two integers >= 1, e.g. (1, 4). "
            f"Received: block_size={block_size}"
        )
    if block_pooling_type not in mask_math.POOLING_TYPES:
        raise ValueError(
            f"Unsupported pooling type {block_pooling_type!r}. Should be "
            f"'AVG' or 'MAX'. Received: block_pooling_type="
            f"{block_pooling_type!r}"
        )
    if sparsity_m_by_n is not None:
        sparsity_m_by_n = _pair_of_ints(
            "sparsity_m_by_n", sparsity_m_by_n, "e.g. (2, 4)"
        )
        m, n = sparsity_m_by_n
        if not 0 < m < n:
            raise ValueError(
                "Argument `sparsity_m_by_n` must be (m, n) with 0 < m < n: "
                "m zeros in every n consecutive weights, e.g. (2, 4). "
                f"Received: sparsity_m_by_n={sparsity_m_by_n}"
            )
        if block_size != (1, 1):
            raise ValueError(
                "Arguments `block_size` and `sparsity_m_by_n` cannot be "
                "combined; pass one of them. Received: "
                f"block_size={block_size}, sparsity_m_by_n={sparsity_m_by_n}"
            )
    return pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n


def _pair_of_ints(name, value, example):
    try:
        items = tuple(value)
    except TypeError:
        items = None
    if (
        items is None
        or len(items) != 2
        or not all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool)
            for i in items
        )
    ):
        raise ValueError(
            f"The {name} argument must be a tuple/list of 2 integers, "
            f"{example}. Received: {name}={value!r}"
        )
    return tuple(int(i) for i in items)


@keras.saving.register_keras_serializable(package="keras_sparsity")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Wraps a layer so that its kernels are pruned during training.

    Usually created by `prune_low_magnitude`. Each prunable weight of the
    wrapped layer gets a 0/1 mask. The optimizer of the model, a
    `SparsityOptimizer`, recomputes the masks at the steps where
    `pruning_schedule` says so (keeping the largest-magnitude weights) and
    multiplies each weight by its mask after every step, so pruned weights
    are exactly zero in the layer's variables (and in every checkpoint).
    `PruneLowMagnitude(layer)` wraps `layer` itself; `prune_low_magnitude`
    wraps a copy of a built layer.

    Args:
        layer: The `keras.layers.Layer` to prune: a built-in layer with
            kernels (Dense, Conv*, DepthwiseConv*, SeparableConv*,
            Embedding, RNNs, MultiHeadAttention, EinsumDense, and
            Bidirectional or TimeDistributed around those) or one that
            implements `PrunableLayer`.
        pruning_schedule: A `PruningSchedule`. Defaults to
            `ConstantSparsity(0.5, begin_step=0)`.
        block_size: Pair of ints. Prune blocks of this many
            (rows, columns) together, the kernel read as a matrix of
            (reduction axes, output axes). `(1, 1)` prunes single weights.
        block_pooling_type: `"AVG"` or `"MAX"`: how a block's magnitudes
            are pooled into its score.
        sparsity_m_by_n: `None` or a pair `(m, n)`: zero `m` of every `n`
            consecutive weights along the kernel's last reduction (input)
            axis, ramping up the share of such groups with the schedule.
        criterion: How weights are scored: `"magnitude"` (default),
            `"saliency"`, `"movement"` or a `keras_sparsity.Criterion`.
        kernel_targets: None (every kernel follows the schedule), or one
            entry per pruned weight: None, or `(final_sparsity, ranking)`
            with ranking `"local"` or `"global"`. Set by
            `prune_low_magnitude`'s `allocation` and `overrides`.
        regrowth: None, or a `SET`, `RigL` or `StaticSparse` instance:
            dynamic sparse training (with a `ConstantSparsity` schedule).
        **kwargs: Passed to `keras.layers.Wrapper` (e.g. `name`).

    Example:

    ```python
    dense = sparsity.PruneLowMagnitude(
        keras.layers.Dense(16),
        pruning_schedule=sparsity.ConstantSparsity(0.8, begin_step=0))
    ```
    """

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        block_size=(1, 1),
        block_pooling_type="AVG",
        sparsity_m_by_n=None,
        criterion="magnitude",
        kernel_targets=None,
        regrowth=None,
        **kwargs,
    ):
        (
            pruning_schedule,
            block_size,
            block_pooling_type,
            sparsity_m_by_n,
        ) = check_pruning_params(
            pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n
        )
        self._check_layer(layer)
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.block_size = block_size
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = sparsity_m_by_n
        self.criterion = criteria.get(criterion)
        self.kernel_targets = _check_targets(kernel_targets)
        self.regrowth = check_regrowth(
            regrowth, pruning_schedule, block_size, sparsity_m_by_n
        )
        self._passes_training = (
            "training" in inspect.signature(layer.call).parameters
        )
        self._pruned = []
        self.masks = []

    def _check_layer(self, layer):
        check_layer(layer)

    def __call__(self, *args, **kwargs):
        if not self.layer.built:
            # Some layers (MultiHeadAttention) build from several input
            # shapes, while a wrapper's build only sees the first one: let
            # the layer build itself on symbolic copies of the inputs.
            symbolic = keras.tree.map_structure(_symbolic, (args, kwargs))
            symbolic[1].pop("training", None)
            self.layer(*symbolic[0], **symbolic[1])
        return super().__call__(*args, **kwargs)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        found = registry.prunable_weights(self.layer)
        for pruned in found:
            try:
                mask_math.check_pattern_fits(
                    _canonical_shape(pruned),
                    self.block_size,
                    self.sparsity_m_by_n,
                )
            except ValueError as error:
                raise ValueError(
                    f"Layer {self.layer.name!r} ({type(self.layer).__name__})"
                    f", weight {pruned.variable.name!r} of shape "
                    f"{tuple(pruned.variable.shape)}: {error}"
                ) from None
        if self.kernel_targets is not None and len(
            self.kernel_targets
        ) != len(found):
            raise ValueError(
                f"Argument `kernel_targets` has {len(self.kernel_targets)} "
                f"entries but layer {self.layer.name!r} has {len(found)} "
                "prunable weights."
            )
        self._pruned = found
        self._add_masks()
        self.built = True

    def _add_masks(self):
        """One float32 mask per weight in `self._pruned`, each marked with
        its owner, and the engine's guard on the weight."""
        self.masks = []
        for index, pruned in enumerate(self._pruned):
            weight = pruned.variable
            mask = self.add_weight(
                name=f"{weight.name}_mask",
                shape=weight.shape,
                initializer="ones",
                dtype="float32",
                trainable=True,
                autocast=False,
            )
            # How the engine tells masks from weights among the variables
            # an optimizer is built on.
            mask._keras_sparsity_mask_of = (self, index)
            self.masks.append(mask)
            if not isinstance(weight.constraint, EngineGuard):
                weight.constraint = EngineGuard(weight.constraint)

    @property
    def pruned_weights(self):
        """The wrapped layer's variables that are masked, in mask order."""
        return [pruned.variable for pruned in self._pruned]

    def call(self, inputs, *args, training=None, **kwargs):
        if self._passes_training:
            kwargs["training"] = training
        return self.layer(inputs, *args, **kwargs)

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        """The wrapped layer's output mask, so Keras masks pass through.

        Overriding this method declares masking support (Keras then does not
        warn that the wrapper "will destroy the mask information"). A layer
        that does not support masking drops the mask, as it would unwrapped.
        """
        if not self.layer.supports_masking:
            return None
        return self.layer.compute_mask(inputs, mask)

    def kernel_sparsity(self, index, sparsity):
        """Pruned weight `index`'s sparsity when the schedule is at
        `sparsity`: its final target scaled by the schedule's progress."""
        target = self._target(index)
        if target is None:
            return sparsity
        final = alloc.final_sparsity(self.pruning_schedule)
        if target[0] == final:
            return sparsity
        if not final:
            return ops.zeros((), "float32")
        # Progress first: at the end it is exactly 1, so the kernel lands
        # on its target exactly.
        progress = ops.cast(sparsity, "float32") / final
        return progress * target[0]

    def weight_criterion(self, index):
        """The criterion that scores pruned weight `index`."""
        return self.criterion

    def ranking(self, index):
        """`"global"` if weight `index` is ranked with the other global
        kernels of the model, else `"local"`."""
        target = self._target(index)
        return alloc.LOCAL if target is None else target[1]

    def _target(self, index):
        if self.kernel_targets is None:
            return None
        return self.kernel_targets[index]

    def new_mask(self, index, weight, sparsity, scored=False):
        """The 0/1 mask of pruned weight `index` at a target sparsity, in
        this wrapper's pattern (unstructured, block or N:M along the
        weight's reduction axes). `weight` holds the masked weight's values
        (ranked by magnitude) or, with `scored=True`, scores (ranked by
        value, negative ones below all)."""
        if self.sparsity_m_by_n is None and self.block_size == (1, 1):
            if scored:
                return mask_math.score_mask(weight, sparsity)
            return mask_math.magnitude_mask(weight, sparsity)
        canonical = self.to_canonical(index, weight)
        if self.sparsity_m_by_n is not None:
            mask = mask_math.m_by_n_mask(
                canonical, sparsity, self.sparsity_m_by_n, scored=scored
            )
        else:
            mask = mask_math.block_mask(
                canonical,
                sparsity,
                self.block_size,
                self.block_pooling_type,
                scored=scored,
            )
        return self.from_canonical(index, mask)

    def to_canonical(self, index, tensor):
        """A tensor shaped like pruned weight `index`, viewed as (reduction
        axes..., flattened output axes): the layout patterns work on."""
        pruned = self._pruned[index]
        return ops.reshape(
            ops.transpose(tensor, pruned.permutation),
            _canonical_shape(pruned),
        )

    def from_canonical(self, index, tensor):
        """The inverse of `to_canonical`."""
        pruned = self._pruned[index]
        shape = pruned.variable.shape
        permuted = [shape[a] for a in pruned.permutation]
        inverse = sorted(
            range(len(permuted)), key=pruned.permutation.__getitem__
        )
        return ops.transpose(ops.reshape(tensor, permuted), inverse)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pruning_schedule": keras.saving.serialize_keras_object(
                    self.pruning_schedule
                ),
                "block_size": self.block_size,
                "block_pooling_type": self.block_pooling_type,
                "sparsity_m_by_n": self.sparsity_m_by_n,
                "criterion": keras.saving.serialize_keras_object(
                    self.criterion
                ),
                "regrowth": None
                if self.regrowth is None
                else keras.saving.serialize_keras_object(self.regrowth),
                "kernel_targets": None
                if self.kernel_targets is None
                else [
                    None if t is None else list(t)
                    for t in self.kernel_targets
                ],
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(
            config.pop("layer"), custom_objects=custom_objects
        )
        schedule = keras.saving.deserialize_keras_object(
            config.pop("pruning_schedule"), custom_objects=custom_objects
        )
        return cls(layer, pruning_schedule=schedule, **config)


def check_regrowth(regrowth, pruning_schedule, block_size, sparsity_m_by_n):
    """Validates a dynamic sparse training method; returns it (or None)."""
    from keras_sparsity import dst

    if regrowth is None:
        return None
    if isinstance(regrowth, dict):
        regrowth = keras.saving.deserialize_keras_object(regrowth)
    if not isinstance(regrowth, dst.Regrowth):
        raise TypeError(
            "Argument `regrowth` must be None or a `keras_sparsity.SET`, "
            f"`RigL` or `StaticSparse` instance. Received: regrowth="
            f"{regrowth!r}"
        )
    regrowth.check_schedule(pruning_schedule)
    if sparsity_m_by_n is not None:
        raise ValueError(
            "Argument `regrowth` cannot be combined with `sparsity_m_by_n`: "
            "dynamic sparse training moves weights anywhere in a kernel. "
            f"Received: sparsity_m_by_n={sparsity_m_by_n}"
        )
    return regrowth


def _check_targets(kernel_targets):
    if kernel_targets is None:
        return None
    if not isinstance(kernel_targets, (list, tuple)):
        raise TypeError(
            "Argument `kernel_targets` must be None or a list with one entry "
            "per pruned weight. Received: "
            f"kernel_targets={kernel_targets!r}"
        )
    checked = []
    for target in kernel_targets:
        if target is not None:
            try:
                sparsity, ranking = target
                valid = 0 <= float(sparsity) < 1 and ranking in (
                    alloc.LOCAL,
                    alloc.GLOBAL,
                )
            except (TypeError, ValueError):
                valid = False
            if not valid:
                raise ValueError(
                    "Argument `kernel_targets` must hold, per pruned weight, "
                    "None or (sparsity in [0, 1), 'local' or 'global'). "
                    f"Received: kernel_targets={kernel_targets!r}"
                )
            target = (float(sparsity), ranking)
        checked.append(target)
    return checked


def _symbolic(x):
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, keras.KerasTensor) or not hasattr(x, "shape"):
        return x
    return keras.KerasTensor(
        tuple(x.shape), dtype=keras.backend.standardize_dtype(x.dtype)
    )


def _canonical_shape(pruned):
    """Shape of a weight read as (reduction axes..., flattened output)."""
    shape = pruned.variable.shape
    reduction = [shape[a] for a in pruned.reduction_axes]
    output = math.prod(shape[a] for a in pruned.permutation[len(reduction) :])
    return tuple(reduction) + (output,)


def check_layer(layer):
    """Raises unless `layer` is a Keras layer this library can wrap."""
    if isinstance(layer, PruneLowMagnitude):
        raise ValueError(
            f"Layer {layer.name!r} is already pruned. Pass the original "
            "layer, or call `strip_pruning` first to prune it again with "
            "other settings."
        )
    if not isinstance(layer, keras.layers.Layer) or isinstance(
        layer, keras.Model
    ):
        raise ValueError(
            "Please initialize `PruneLowMagnitude` with a `keras.layers.Layer` "
            "instance that is not a model; to prune a model, pass it to "
            f"`prune_low_magnitude`. Received: layer={layer!r}"
        )
    if not (
        registry.is_prunable(layer) or registry.has_nothing_to_prune(layer)
    ):
        raise ValueError(
            f"Layer {layer.name!r} of type {type(layer).__name__} is not "
            "supported: its weights are not known to be prunable. Supported "
            "are Dense, Conv*, Conv*Transpose, DepthwiseConv*, "
            "SeparableConv*, Embedding, LSTM/GRU/SimpleRNN/ConvLSTM, "
            "MultiHeadAttention, EinsumDense, Bidirectional and "
            "TimeDistributed around those, layers without kernels, and any "
            "layer that implements `PrunableLayer.get_prunable_weights()`."
        )
