"""Bad input to every public function: a clear error, the model untouched.

Issue #15, "Bad input". Each case calls one public function or class of
`keras_sparsity` (`__all__`, `oneshot.prune`, `structural.shrink`,
`prune_channels`) with one wrong argument: a wrong type, a value out of
range, `None` where it is not accepted, an unknown keyword, or a model of
the wrong kind (unbuilt, already pruned, subclassed). Each case asserts
that

1. the call raises `ValueError` or `TypeError` (not `AttributeError`,
   `KeyError` or a backend error, and not nothing);
2. the message names the argument and shows the bad value;
3. the user's model is unchanged: the same layers (by id), the same
   weights (bit for bit), the same constraint on every variable, and no
   layer wrapped that was not wrapped before.
"""

import dataclasses
import os
from typing import Any
from typing import Callable

import keras
import numpy as np
import pytest
from conftest import Subclassed
from conftest import built_subclassed

import keras_sparsity as sparsity
from keras_sparsity import _compat
from keras_sparsity import oneshot
from keras_sparsity import structural
from keras_sparsity.walk import pruning_wrappers

# --- the user's models -----------------------------------------------------


def plain():
    """Dense 4 -> 3, built: the model most cases pass."""
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3)], name="user_model"
    )


def unbuilt():
    return keras.Sequential([keras.layers.Dense(3)], name="unbuilt_model")


def pruned():
    return sparsity.prune_low_magnitude(plain())


def subclassed():
    return built_subclassed(3, 4, name="subclassed_model")


MODELS = {
    "plain": plain,
    "unbuilt": unbuilt,
    "pruned": pruned,
    "subclassed": subclassed,
}


def snapshot(model):
    """What must not change: layers, weights, constraints, wrappers."""
    variables = list(model.variables)
    return {
        "built": model.built,
        "layers": [id(layer) for layer in _compat.all_sublayers(model)],
        "variables": [id(v) for v in variables],
        "values": [np.array(keras.ops.convert_to_numpy(v)) for v in variables],
        "constraints": [v.constraint for v in variables],
        "wrappers": [id(w) for w in pruning_wrappers(model)],
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["built"] == before["built"]
    assert after["layers"] == before["layers"], "layers replaced"
    assert after["variables"] == before["variables"], "variables replaced"
    for old, new in zip(before["values"], after["values"]):
        assert old.dtype == new.dtype and np.array_equal(old, new), (
            "weights changed"
        )
    for old, new in zip(before["constraints"], after["constraints"]):
        assert old is new, "a constraint changed"
    assert after["wrappers"] == before["wrappers"], "layers wrapped"


# --- the table ---------------------------------------------------------------


@dataclasses.dataclass
class Case:
    id: str
    call: Callable  # call(model) makes the bad call
    argument: str  # the name the message must contain
    shows: Any  # a str the message must contain, or shows(model) -> str
    model: str = "plain"
    xfail: str = ""  # the defect, for a case that fails today

    def param(self):
        marks = (
            [pytest.mark.xfail(strict=True, reason=self.xfail)]
            if self.xfail
            else []
        )
        return pytest.param(self, id=self.id, marks=marks)


def name_of(model):
    return repr(model.name)


UNKNOWN = "unknown_keyword"

# Defects in modules outside this test's remit (engine, compressed,
# structural, oneshot): each case fails today, and passes once fixed.
XFAIL = {}  # id -> the defect, for a case that fails today


def cases():
    s = sparsity
    cs = s.ConstantSparsity(0.5, 0)
    table = []

    def add(id, call, argument, shows, model="plain", xfail=""):
        xfail = xfail or XFAIL.get(id, "")
        table.append(Case(id, call, argument, shows, model, xfail))

    # prune_low_magnitude: each argument, then the models it refuses.
    plm = s.prune_low_magnitude
    add("plm-to_prune-str", lambda m: plm("model"), "to_prune", "str")
    add("plm-to_prune-None", lambda m: plm(None), "to_prune", "NoneType")
    add("plm-to_prune-int", lambda m: plm(3), "to_prune", "int")
    add("plm-to_prune-dict", lambda m: plm({"a": m}), "to_prune", "dict")
    add(
        "plm-to_prune-list-of-str",
        lambda m: plm(["dense"]),
        "to_prune",
        "'dense'",
    )
    add(
        "plm-to_prune-already-pruned",
        lambda m: plm(m),
        "to_prune",
        name_of,
        model="pruned",
    )
    add(
        "plm-to_prune-unbuilt-global",
        lambda m: plm(m, allocation="global"),
        "to_prune",
        name_of,
        model="unbuilt",
    )
    add(
        "plm-inplace-unbuilt-subclassed",
        lambda m: plm(Subclassed(name="fresh_subclassed"), inplace=True),
        "to_prune",
        "'fresh_subclassed'",
    )
    add(
        "plm-inplace-plain-model",
        lambda m: plm(m, inplace=True),
        "inplace",
        "True",
    )
    for value, shows in [
        ("0.5", "'0.5'"),
        (0.5, "0.5"),
        ({"target_sparsity": 0.5}, "target_sparsity"),
    ]:
        add(
            f"plm-pruning_schedule-{type(value).__name__}",
            lambda m, v=value: plm(m, pruning_schedule=v),
            "pruning_schedule",
            shows,
        )
    for value in ["1x1", (0, 1), (1,), (1.5, 1), None, (1, 2, 3), (-1, 1)]:
        add(
            f"plm-block_size-{value!r}",
            lambda m, v=value: plm(m, block_size=v),
            "block_size",
            repr(value),
        )
    for value in ["MIN", 1, None]:
        add(
            f"plm-block_pooling_type-{value!r}",
            lambda m, v=value: plm(m, block_pooling_type=v),
            "block_pooling_type",
            repr(value),
        )
    for value in ["xnnpack", 1]:
        add(
            f"plm-pruning_policy-{value!r}",
            lambda m, v=value: plm(m, pruning_policy=v),
            "pruning_policy",
            repr(value),
        )
    for value in [(4, 2), "2:4", (2,), (0, 4), (2.0, 4), (2, 4, 8), 2]:
        add(
            f"plm-sparsity_m_by_n-{value!r}",
            lambda m, v=value: plm(m, sparsity_m_by_n=v),
            "sparsity_m_by_n",
            repr(value),
        )
    for value in ["bogus", 1, None, ["uniform"]]:
        add(
            f"plm-allocation-{value!r}",
            lambda m, v=value: plm(m, allocation=v),
            "allocation",
            repr(value),
        )
    for value, shows in [
        ([("dense", 0.5)], "[('dense', 0.5)]"),
        ({"dense": 1.5}, "1.5"),
        ({"dense": "0.5"}, "'0.5'"),
        ({1: 0.5}, "1"),
        ({"(": 0.5}, "'('"),
        ({"no_such_layer": 0.5}, "'no_such_layer'"),
    ]:
        add(
            f"plm-overrides-{value!r}",
            lambda m, v=value: plm(m, overrides=v),
            "overrides",
            shows,
        )
    for value in ["l1", 1, None]:
        add(
            f"plm-criterion-{value!r}",
            lambda m, v=value: plm(m, criterion=v),
            "criterion",
            repr(value),
        )
    for value, shows in [
        ("set", "'set'"),
        (1, "1"),
        (s.ConstantSparsity(0.5, 0), "ConstantSparsity"),
    ]:
        add(
            f"plm-regrowth-{type(value).__name__}",
            lambda m, v=value: plm(m, regrowth=v),
            "regrowth",
            shows,
        )
    add(
        "plm-regrowth-with-global",
        lambda m: plm(m, regrowth=s.SET(end_step=10), allocation="global"),
        "regrowth",
        "'global'",
    )
    for argument in ["strict", "inplace"]:
        add(
            f"plm-{argument}-str",
            lambda m, a=argument: plm(m, **{a: "no"}),
            argument,
            "'no'",
        )
    add(
        "plm-unknown-keyword-model",
        lambda m: plm(m, **{UNKNOWN: 1}),
        UNKNOWN,
        "1",
    )
    add(
        "plm-unknown-keyword-layer",
        lambda m: plm(keras.layers.Dense(3), **{UNKNOWN: 1}),
        UNKNOWN,
        "",
    )
    add(
        "plm-layer-pruning_policy",
        lambda m: plm(
            keras.layers.Dense(3), pruning_policy=s.PruneForLatencyOnXNNPack()
        ),
        "pruning_policy",
        "PruneForLatencyOnXNNPack",
    )
    add(
        "plm-xnnpack-subclassed",
        lambda m: plm(m, pruning_policy=s.PruneForLatencyOnXNNPack()),
        "model",
        "Subclassed",
        model="subclassed",
    )

    # strip_pruning
    add("strip-model-str", lambda m: s.strip_pruning("m"), "model", "str")
    add("strip-model-None", lambda m: s.strip_pruning(None), "model", "None")
    add(
        "strip-model-dense-layer",
        lambda m: s.strip_pruning(keras.layers.Dense(3)),
        "model",
        "Dense",
    )
    add(
        "strip-inplace-str",
        lambda m: s.strip_pruning(m, inplace="no"),
        "inplace",
        "'no'",
        model="pruned",
    )
    add(
        "strip-inplace-plain-pruned",
        lambda m: s.strip_pruning(m, inplace=True),
        "inplace",
        "True",
        model="pruned",
    )
    add(
        "strip-unknown-keyword",
        lambda m: s.strip_pruning(m, **{UNKNOWN: 1}),
        UNKNOWN,
        "",
        model="pruned",
    )

    # unpruned_layers
    add("unpruned-model-str", lambda m: s.unpruned_layers("m"), "model", "str")
    add(
        "unpruned-model-None",
        lambda m: s.unpruned_layers(None),
        "model",
        "None",
    )

    # schedules
    for args, argument, shows in [
        (("0.5", 0), "target_sparsity", "'0.5'"),
        ((None, 0), "target_sparsity", "None"),
        ((1.0, 0), "target_sparsity", "1.0"),
        ((-0.1, 0), "target_sparsity", "-0.1"),
        ((0.5, 1.5), "begin_step", "1.5"),
        ((0.5, "0"), "begin_step", "'0'"),
        ((0.5, None), "begin_step", "None"),
        ((0.5, -1), "begin_step", "-1"),
        ((0.5, 0, -2), "end_step", "-2"),
        ((0.5, 10, 5), "end_step", "5"),
        ((0.5, 0, -1, 0), "frequency", "0"),
        ((0.5, 0, -1, "100"), "frequency", "'100'"),
    ]:
        add(
            f"constant-{argument}-{shows}",
            lambda m, a=args: s.ConstantSparsity(*a),
            argument,
            shows,
        )
    for kwargs, argument, shows in [
        (dict(initial_sparsity="0.1"), "initial_sparsity", "'0.1'"),
        (dict(final_sparsity=1.0), "final_sparsity", "1.0"),
        (dict(final_sparsity=None), "final_sparsity", "None"),
        (dict(begin_step=2.0), "begin_step", "2.0"),
        (dict(end_step=None), "end_step", "None"),
        (dict(end_step=-1), "end_step", "-1"),
        (dict(power=-1), "power", "-1"),
        (dict(power="3"), "power", "'3'"),
        (dict(power=None), "power", "None"),
        (dict(frequency=0), "frequency", "0"),
    ]:
        full = dict(
            initial_sparsity=0.1, final_sparsity=0.8, begin_step=0, end_step=10
        )
        full.update(kwargs)
        add(
            f"polynomial-{argument}-{shows}",
            lambda m, k=full: s.PolynomialDecay(**k),
            argument,
            shows,
        )
    add(
        "constant-unknown-keyword",
        lambda m: s.ConstantSparsity(0.5, 0, **{UNKNOWN: 1}),
        UNKNOWN,
        "",
    )

    # criteria
    for value in ["0.9", 1.0, -0.1, None, True]:
        add(
            f"saliency-decay-{value!r}",
            lambda m, v=value: s.Saliency(v),
            "decay",
            repr(value),
        )
    add(
        "magnitude-unknown-keyword",
        lambda m: s.Magnitude(**{UNKNOWN: 1}),
        UNKNOWN,
        "",
    )

    # dynamic sparse training
    for cls in (s.SET, s.RigL):
        for kwargs, argument, shows in [
            (dict(update_frequency=0), "update_frequency", "0"),
            (dict(update_frequency="100"), "update_frequency", "'100'"),
            (dict(update_frequency=1.5), "update_frequency", "1.5"),
            (dict(drop_fraction=1.5), "drop_fraction", "1.5"),
            (dict(drop_fraction=0), "drop_fraction", "0"),
            (dict(drop_fraction="0.3"), "drop_fraction", "'0.3'"),
            (dict(end_step=-1), "end_step", "-1"),
            (dict(end_step="10"), "end_step", "'10'"),
            (dict(seed="0"), "seed", "'0'"),
            (dict(seed=1.5), "seed", "1.5"),
        ]:
            full = dict(end_step=10)
            full.update(kwargs)
            add(
                f"{cls.__name__}-{argument}-{shows}",
                lambda m, c=cls, k=full: c(**k),
                argument,
                shows,
            )
    for value in ["0", 1.5, None]:
        add(
            f"StaticSparse-seed-{value!r}",
            lambda m, v=value: s.StaticSparse(v),
            "seed",
            repr(value),
        )
    add(
        "plm-regrowth-with-polynomial",
        lambda m: plm(
            m,
            pruning_schedule=s.PolynomialDecay(0.1, 0.5, 0, 10),
            regrowth=s.SET(end_step=10),
        ),
        "pruning_schedule",
        "PolynomialDecay",
    )

    # PruneLowMagnitude
    plml = s.PruneLowMagnitude
    for value, shows in [("dense", "'dense'"), (None, "None"), (3, "3")]:
        add(
            f"wrapper-layer-{value!r}",
            lambda m, v=value: plml(v),
            "layer",
            shows,
        )
    add(
        "wrapper-layer-model",
        lambda m: plml(m),
        "layer",
        "Sequential",
    )
    add(
        "wrapper-layer-already-wrapped",
        lambda m: plml(pruning_wrappers(m)[0]),
        "layer",
        lambda m: repr(pruning_wrappers(m)[0].name),
        model="pruned",
    )
    for kwargs, argument, shows in [
        (dict(pruning_schedule=0.5), "pruning_schedule", "0.5"),
        (dict(block_size=(0, 1)), "block_size", "(0, 1)"),
        (dict(block_pooling_type="MIN"), "block_pooling_type", "'MIN'"),
        (dict(sparsity_m_by_n=(4, 2)), "sparsity_m_by_n", "(4, 2)"),
        (dict(criterion="l1"), "criterion", "'l1'"),
        (dict(regrowth="set"), "regrowth", "'set'"),
        (dict(kernel_targets="0.5"), "kernel_targets", "'0.5'"),
        (dict(kernel_targets=[1.5]), "kernel_targets", "1.5"),
        (dict(**{UNKNOWN: 1}), UNKNOWN, ""),
    ]:
        add(
            f"wrapper-{argument}-{shows}",
            lambda m, k=kwargs: plml(keras.layers.Dense(3), **k),
            argument,
            shows,
        )

    # SparsityOptimizer
    for value, shows in [(None, "None"), (1, "1"), ("no_such", "'no_such'")]:
        add(
            f"optimizer-inner_optimizer-{value!r}",
            lambda m, v=value: s.SparsityOptimizer(v),
            "inner_optimizer",
            shows,
        )
    add(
        "optimizer-inner-already-sparsity",
        lambda m: s.SparsityOptimizer(s.SparsityOptimizer("adam")),
        "inner_optimizer",
        "SparsityOptimizer",
    )

    # UpdatePruningStep, PruningSummaries
    add(
        "update-step-unknown-keyword",
        lambda m: s.UpdatePruningStep(**{UNKNOWN: 1}),
        UNKNOWN,
        "",
    )
    for kwargs, argument, shows in [
        (dict(log_dir=None), "log_dir", "None"),
        (dict(log_dir=3), "log_dir", "3"),
        (dict(log_dir=__file__), "log_dir", repr(__file__)),
        (dict(log_dir="logs", update_freq="hourly"), "update_freq", "'hourly'"),
        (dict(log_dir="logs", update_freq=0), "update_freq", "0"),
        (dict(log_dir="logs", update_freq=1.5), "update_freq", "1.5"),
    ]:
        add(
            f"summaries-{argument}-{shows}",
            lambda m, k=kwargs: s.PruningSummaries(**k),
            argument,
            shows,
        )

    # PruningPolicy
    add(
        "xnnpack-unbuilt",
        lambda m: s.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(m),
        "model",
        name_of,
        model="unbuilt",
    )
    add(
        "xnnpack-model-str",
        lambda m: s.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(
            "m"
        ),
        "model",
        "str",
    )

    # report, save_compressed, load_compressed, litert
    for model in ["unbuilt"]:
        add(
            f"report-model-{model}",
            lambda m: s.report(m),
            "model",
            name_of,
            model=model,
        )
    add("report-model-str", lambda m: s.report("m"), "model", "str")
    add("report-model-None", lambda m: s.report(None), "model", "None")
    add(
        "report-sizes-str",
        lambda m: s.report(m, sizes="no"),
        "sizes",
        "'no'",
    )
    add(
        "save-model-unbuilt",
        lambda m: s.save_compressed(m, "unused.keras"),
        "model",
        name_of,
        model="unbuilt",
    )
    add(
        "save-model-str",
        lambda m: s.save_compressed("m", "unused.keras"),
        "model",
        "str",
    )
    add(
        "save-path-None",
        lambda m: s.save_compressed(m, None),
        "path",
        "None",
    )
    add("save-path-int", lambda m: s.save_compressed(m, 3), "path", "3")
    for value in ["float8", 1, None]:
        add(
            f"save-values-{value!r}",
            lambda m, v=value: s.save_compressed(m, "unused.keras", values=v),
            "values",
            repr(value),
        )
    add("load-path-None", lambda m: s.load_compressed(None), "path", "None")
    add("load-path-int", lambda m: s.load_compressed(3), "path", "3")
    for kwargs, argument, shows in [
        (dict(custom_objects=["X"]), "custom_objects", "['X']"),
        (dict(compile="no"), "compile", "'no'"),
        (dict(safe_mode="no"), "safe_mode", "'no'"),
        (dict(max_bytes=-1), "max_bytes", "-1"),
        (dict(max_bytes="10"), "max_bytes", "'10'"),
    ]:
        add(
            f"load-{argument}-{shows}",
            lambda m, k=kwargs: s.load_compressed(FILES["compressed"], **k),
            argument,
            shows,
        )
    add(
        "describe_litert-path-None",
        lambda m: s.describe_litert(None),
        "path",
        "None",
    )
    add("export_litert-path-int", lambda m: s.export_litert(m, 3), "path", "3")
    add(
        "export_litert-model-str",
        lambda m: s.export_litert("m", "unused.tflite"),
        "model",
        "str",
    )
    add(
        "export_litert-model-unbuilt",
        lambda m: s.export_litert(m, "unused.tflite"),
        "model",
        name_of,
        model="unbuilt",
    )

    # structural: prune_channels, PruneChannels, shrink
    pc = structural.prune_channels
    add("prune_channels-model-str", lambda m: pc("m", cs), "model", "str")
    for model in ["unbuilt", "pruned", "subclassed"]:
        add(
            f"prune_channels-model-{model}",
            lambda m: pc(m, cs),
            "model",
            name_of,
            model=model,
        )
    for value, shows in [(None, "None"), (0.5, "0.5"), ("0.5", "'0.5'")]:
        add(
            f"prune_channels-pruning_schedule-{shows}",
            lambda m, v=value: pc(m, v),
            "pruning_schedule",
            shows,
        )
    for kwargs, argument, shows in [
        (dict(importance="l3"), "importance", "'l3'"),
        (dict(importance=None), "importance", "None"),
        (dict(allocation="erk"), "allocation", "'erk'"),
        (dict(allocation=1), "allocation", "1"),
        (dict(round_to=0), "round_to", "0"),
        (dict(round_to="8"), "round_to", "'8'"),
        (dict(round_to=1.5), "round_to", "1.5"),
        (dict(**{UNKNOWN: 1}), UNKNOWN, ""),
    ]:
        add(
            f"prune_channels-{argument}-{shows}",
            lambda m, k=kwargs: pc(m, cs, **k),
            argument,
            shows,
        )
    for kwargs, argument, shows in [
        (dict(layer="dense"), "layer", "'dense'"),
        (dict(layer=None), "layer", "None"),
        (dict(pruning_schedule=0.5), "pruning_schedule", "0.5"),
        (dict(channels="out"), "channels", "'out'"),
        (dict(importance="l3"), "importance", "'l3'"),
        (dict(round_to=0), "round_to", "0"),
    ]:
        full = dict(layer=keras.layers.Dense(3))
        full.update(kwargs)
        add(
            f"PruneChannels-{argument}-{shows}",
            lambda m, k=full: structural.PruneChannels(**k),
            argument,
            shows,
        )
    shrink = structural.shrink
    add("shrink-model-str", lambda m: shrink("m"), "model", "str")
    add("shrink-model-None", lambda m: shrink(None), "model", "None")
    for model in ["unbuilt", "subclassed"]:
        add(
            f"shrink-model-{model}",
            lambda m: shrink(m),
            "model",
            name_of,
            model=model,
        )
    for argument in ["plan_only", "return_plan"]:
        add(
            f"shrink-{argument}-str",
            lambda m, a=argument: shrink(m, **{a: "no"}),
            argument,
            "'no'",
        )

    # oneshot.prune
    op = oneshot.prune
    data = np.zeros((2, 4), "float32")
    add("oneshot-model-str", lambda m: op("m", data), "model", "str")
    add("oneshot-model-None", lambda m: op(None, data), "model", "None")
    for model in ["unbuilt", "pruned"]:
        add(
            f"oneshot-model-{model}",
            lambda m: op(m, data),
            "model",
            name_of,
            model=model,
        )
    for value, shows, xfail in [
        ("x", "'x'", ""),
        (3, "int", ""),
        ({"x": data}, "dict", ""),
    ]:
        add(
            f"oneshot-calibration_data-{shows}",
            lambda m, v=value: op(m, v),
            "calibration_data",
            shows,
            xfail=xfail,
        )
    for kwargs, argument, shows in [
        (dict(method="obs"), "method", "'obs'"),
        (dict(method=None), "method", "None"),
        (dict(sparsity=1.5), "sparsity", "1.5"),
        (dict(sparsity="0.5"), "sparsity", "'0.5'"),
        (dict(sparsity=None), "sparsity", "None"),
        (dict(sparsity_m_by_n=(4, 2)), "sparsity_m_by_n", "(4, 2)"),
        (dict(sparsity_m_by_n="2:4"), "sparsity_m_by_n", "'2:4'"),
        (dict(layers=3), "layers", "3"),
        (dict(layers="no_such_layer"), "layers", "'no_such_layer'"),
        (dict(allocation="bogus"), "allocation", "'bogus'"),
        (dict(inplace="no"), "inplace", "'no'"),
        (dict(keep_masks="no"), "keep_masks", "'no'"),
        (dict(verbose="loud"), "verbose", "'loud'"),
        (dict(return_summary="no"), "return_summary", "'no'"),
        (dict(**{UNKNOWN: 1}), UNKNOWN, ""),
    ]:
        add(
            f"oneshot-{argument}-{shows}",
            lambda m, k=kwargs: op(m, data, **k),
            argument,
            shows,
        )

    # more values: NaN, bools where ints are wanted, classes for instances
    nan = float("nan")
    add(
        "plm-to_prune-KerasTensor",
        lambda m: plm(keras.Input((4,))),
        "to_prune",
        "KerasTensor",
    )
    add(
        "plm-to_prune-unbuilt-subclassed",
        lambda m: plm(Subclassed(name="fresh_subclassed")),
        "to_prune",
        "'fresh_subclassed'",
    )
    add(
        "plm-block_size-bool",
        lambda m: plm(m, block_size=(True, 1)),
        "block_size",
        "(True, 1)",
    )
    add(
        "plm-block_size-with-m_by_n",
        lambda m: plm(m, block_size=(2, 2), sparsity_m_by_n=(2, 4)),
        "sparsity_m_by_n",
        "(2, 4)",
    )
    add(
        "plm-sparsity_m_by_n-bool",
        lambda m: plm(m, sparsity_m_by_n=(True, 4)),
        "sparsity_m_by_n",
        "(True, 4)",
    )
    add(
        "plm-sparsity_m_by_n-with-global",
        lambda m: plm(m, sparsity_m_by_n=(2, 4), allocation="global"),
        "sparsity_m_by_n",
        "'global'",
    )
    add(
        "plm-criterion-class",
        lambda m: plm(m, criterion=s.Magnitude),
        "criterion",
        "Magnitude",
    )
    add(
        "plm-criterion-unknown-config",
        lambda m: plm(m, criterion={"class_name": "Nope", "config": {}}),
        "criterion",
        "'Nope'",
    )
    add(
        "plm-pruning_schedule-class",
        lambda m: plm(m, pruning_schedule=s.ConstantSparsity),
        "pruning_schedule",
        "ConstantSparsity",
    )
    add(
        "plm-pruning_policy-class",
        lambda m: plm(m, pruning_policy=s.PruneForLatencyOnXNNPack),
        "pruning_policy",
        "PruneForLatencyOnXNNPack",
    )
    for value, shows in [
        (True, "True"),
        (nan, "nan"),
        (s.SET(end_step=3), "SET"),
    ]:
        add(
            f"plm-overrides-value-{shows}",
            lambda m, v=value: plm(m, overrides={".*": v}),
            "overrides",
            shows,
        )
    add(
        "plm-regrowth-end-before-begin",
        lambda m: plm(
            m,
            pruning_schedule=s.ConstantSparsity(0.5, 5),
            regrowth=s.SET(end_step=0),
        ),
        "end_step",
        "0",
    )
    add(
        "constant-target_sparsity-nan",
        lambda m: s.ConstantSparsity(nan, 0),
        "target_sparsity",
        "nan",
    )
    add(
        "constant-begin_step-bool",
        lambda m: s.ConstantSparsity(0.5, True),
        "begin_step",
        "True",
    )
    add(
        "constant-frequency-bool",
        lambda m: s.ConstantSparsity(0.5, 0, frequency=True),
        "frequency",
        "True",
    )
    for value, shows in [
        (nan, "nan"),
        (float("inf"), "inf"),
        (0, "0"),
        (True, "True"),
    ]:
        add(
            f"polynomial-power-{shows}-extra",
            lambda m, v=value: s.PolynomialDecay(0.1, 0.5, 0, 10, power=v),
            "power",
            shows,
        )
    add("saliency-decay-nan", lambda m: s.Saliency(nan), "decay", "nan")
    add(
        "SET-drop_fraction-nan",
        lambda m: s.SET(drop_fraction=nan, end_step=10),
        "drop_fraction",
        "nan",
    )
    add(
        "SET-update_frequency-bool",
        lambda m: s.SET(update_frequency=True, end_step=10),
        "update_frequency",
        "True",
    )
    add(
        "SET-seed-bool", lambda m: s.SET(seed=True, end_step=10), "seed", "True"
    )
    add("SET-end_step-None", lambda m: s.SET(), "end_step", "None")
    add(
        "StaticSparse-seed-bool", lambda m: s.StaticSparse(True), "seed", "True"
    )
    add(
        "wrapper-kernel_targets-nan",
        lambda m: plml(keras.layers.Dense(3), kernel_targets=[nan]),
        "kernel_targets",
        "nan",
    )
    add(
        "wrapper-kernel_targets-0.5",
        lambda m: plml(keras.layers.Dense(3), kernel_targets=0.5),
        "kernel_targets",
        "0.5",
    )
    add(
        "summaries-log_dir-empty",
        lambda m: s.PruningSummaries(""),
        "log_dir",
        "''",
    )
    add(
        "summaries-update_freq-bool",
        lambda m: s.PruningSummaries("logs", update_freq=True),
        "update_freq",
        "True",
    )
    add(
        "summaries-unknown-keyword",
        lambda m: s.PruningSummaries("logs", **{UNKNOWN: 1}),
        UNKNOWN,
        "1",
    )
    add(
        "optimizer-inner_optimizer-class",
        lambda m: s.SparsityOptimizer(keras.optimizers.Adam),
        "inner_optimizer",
        "Adam",
    )
    add(
        "optimizer-name-int",
        lambda m: s.SparsityOptimizer("adam", name=3),
        "name",
        "3",
    )
    add(
        "optimizer-unknown-keyword",
        lambda m: s.SparsityOptimizer("adam", **{UNKNOWN: 1}),
        UNKNOWN,
        "",
    )
    add("save-path-empty", lambda m: s.save_compressed(m, ""), "path", "''")
    add(
        "export_litert-path-empty",
        lambda m: s.export_litert(m, ""),
        "path",
        "''",
    )
    add(
        "load-max_bytes-bool",
        lambda m: s.load_compressed(FILES["compressed"], max_bytes=True),
        "max_bytes",
        "True",
    )
    add(
        "load-max_bytes-float",
        lambda m: s.load_compressed(FILES["compressed"], max_bytes=1.5),
        "max_bytes",
        "1.5",
    )
    add("describe_litert-path-int", lambda m: s.describe_litert(3), "path", "3")
    add("report-sizes-None", lambda m: s.report(m, sizes=None), "sizes", "None")
    for name, call in [
        ("report", lambda layer: s.report(layer)),
        ("save", lambda layer: s.save_compressed(layer, "unused.keras")),
        ("export_litert", lambda layer: s.export_litert(layer, "u.tflite")),
        ("prune_channels", lambda layer: pc(layer, cs)),
        ("shrink", lambda layer: shrink(layer)),
        ("oneshot", lambda layer: op(layer, data)),
    ]:
        add(
            f"{name}-model-layer",
            lambda m, c=call: c(keras.layers.Dense(3)),
            "model",
            "Dense",
        )
    add(
        "shrink-unknown-keyword",
        lambda m: shrink(m, **{UNKNOWN: 1}),
        UNKNOWN,
        "",
    )
    add(
        "prune_channels-round_to-bool",
        lambda m: pc(m, cs, round_to=True),
        "round_to",
        "True",
    )
    add(
        "prune_channels-pruning_schedule-class",
        lambda m: pc(m, s.ConstantSparsity),
        "pruning_schedule",
        "ConstantSparsity",
    )
    for kwargs, argument, shows in [
        (dict(sparsity=nan), "sparsity", "nan"),
        (dict(sparsity=-0.1), "sparsity", "-0.1"),
        (dict(sparsity=True), "sparsity", "True"),
        (dict(sparsity=1), "sparsity", "1"),
        (dict(method=3), "method", "3"),
        (dict(layers=[]), "layers", "[]"),
        (dict(verbose=5), "verbose", "5"),
    ]:
        add(
            f"oneshot-{argument}-{shows}-extra",
            lambda m, k=kwargs: op(m, data, **k),
            argument,
            shows,
        )
    add(
        "oneshot-calibration_data-None",
        lambda m: op(m, None),
        "calibration_data",
        "None",
    )
    add(
        "oneshot-calibration_data-empty",
        lambda m: op(m, np.zeros((0, 4), "float32")),
        "calibration_data",
        "empty",
    )
    add(
        "oneshot-calibration_data-wrong-shape",
        lambda m: op(m, np.zeros((2, 7), "float32")),
        "calibration_data",
        "(2, 7)",
    )

    # prune_scope
    add(
        "prune_scope-unknown-keyword",
        lambda m: s.prune_scope(**{UNKNOWN: 1}),
        UNKNOWN,
        "",
    )
    return table


CASES = cases()
FILES = {}  # a valid compressed file, so that load_compressed reads its
# other arguments


@pytest.fixture(scope="module")
def compressed_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("files") / "model.keras")
    sparsity.save_compressed(plain(), path)
    FILES["compressed"] = path
    return path


def test_case_ids_are_unique_and_every_xfail_has_its_case():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert set(XFAIL) <= set(ids)


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_input_raises_clear_error_and_keeps_model(
    case, tmp_path, compressed_file
):
    model = MODELS[case.model]()
    before = snapshot(model)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # "unused.keras" and "logs" land here, if anywhere
    try:
        with pytest.raises((ValueError, TypeError)) as info:
            case.call(model)
    finally:
        os.chdir(cwd)
    message = str(info.value)
    assert case.argument in message, message
    shows = case.shows(model) if callable(case.shows) else case.shows
    assert shows in message, message
    assert_unchanged(model, before)
    assert not os.listdir(tmp_path), "a bad call wrote files"
