"""Bad input (issue #15): wrong types, ranges, None, NaN and unbuilt models
given to the public functions end in a `ValueError` or `TypeError` that
names the argument and the value, and leave the user's model as it was."""

import math
import os

import keras
import pytest

import keras_sparsity as sparsity

pytestmark = pytest.mark.backend_independent


def user_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def snapshot(model):
    """What a failed call must leave unchanged: layers and weight bits."""
    return (
        [id(layer) for layer in model.layers],
        [weight.tobytes() for weight in model.get_weights()],
    )


def prune(model, **kwargs):
    return sparsity.prune_low_magnitude(model, **kwargs)


def schedule(**kwargs):
    arguments = dict(
        initial_sparsity=0.1, final_sparsity=0.5, begin_step=0, end_step=10
    )
    return sparsity.PolynomialDecay(**{**arguments, **kwargs})


def constant(**kwargs):
    arguments = {"target_sparsity": 0.5, "begin_step": 0}
    return sparsity.ConstantSparsity(**{**arguments, **kwargs})


def summaries(**kwargs):
    return sparsity.PruningSummaries(**{"log_dir": "logs", **kwargs})


# (call taking the user's model, argument named in the message, its value).
CASES = [
    (lambda m: prune(m, pruning_schedule="x"), "pruning_schedule", "'x'"),
    (lambda m: prune(m, block_size=-1), "block_size", "-1"),
    (lambda m: prune(m, block_size=(0, 1)), "block_size", "(0, 1)"),
    (
        lambda m: prune(m, block_pooling_type="SUM"),
        "block_pooling_type",
        "'SUM'",
    ),
    (lambda m: prune(m, sparsity_m_by_n=(4, 2)), "sparsity_m_by_n", "(4, 2)"),
    (lambda m: prune(m, sparsity_m_by_n="2:4"), "sparsity_m_by_n", "'2:4'"),
    (lambda m: sparsity.save_compressed(m, None), "path", "None"),
    (
        lambda m: sparsity.save_compressed(m, "m.sparse", values="int4"),
        "values",
        "'int4'",
    ),
    (
        lambda m: sparsity.compressed.information_bound_bytes(m, values=None),
        "values",
        "None",
    ),
    (lambda m: sparsity.load_compressed(1.5), "path", "1.5"),
    (
        lambda m: sparsity.load_compressed("m.sparse", max_bytes=-1),
        "max_bytes",
        "-1",
    ),
    (lambda m: schedule(power=-1), "power", "-1"),
    (lambda m: schedule(power=math.nan), "power", "nan"),
    (lambda m: schedule(final_sparsity=1.0), "final_sparsity", "1.0"),
    (lambda m: schedule(initial_sparsity=None), "initial_sparsity", "None"),
    (lambda m: schedule(begin_step=1.5), "begin_step", "1.5"),
    (lambda m: schedule(end_step=-5), "end_step", "-5"),
    (lambda m: schedule(frequency=0), "frequency", "0"),
    (lambda m: constant(target_sparsity=-0.1), "target_sparsity", "-0.1"),
    (lambda m: constant(frequency="1"), "frequency", "'1'"),
    (lambda m: summaries(update_freq="often"), "update_freq", "'often'"),
    (lambda m: summaries(log_dir=None), "log_dir", "None"),
]


@pytest.mark.parametrize(
    "call, argument, value",
    CASES,
    ids=[f"{argument}={value}" for _, argument, value in CASES],
)
def test_bad_arguments_name_argument_and_value_and_change_nothing(
    call, argument, value, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    model = user_model()
    before = snapshot(model)
    with pytest.raises((ValueError, TypeError)) as error:
        call(model)
    message = " ".join(str(error.value).split())
    assert f"`{argument}`" in message or f"{argument}=" in message, message
    assert f"Received: {argument}={value}" in message, message
    assert snapshot(model) == before
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda m: sparsity.save_compressed(m, "m.sparse"),
        lambda m: sparsity.report(m),
        lambda m: sparsity.compressed.information_bound_bytes(m),
    ],
    ids=["save_compressed", "report", "information_bound_bytes"],
)
def test_unbuilt_models_are_refused_by_name(call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = keras.Sequential([keras.layers.Dense(3)], name="unbuilt")
    with pytest.raises(ValueError, match="must be built") as error:
        call(model)
    assert "Received: model='unbuilt'" in str(error.value)
    assert not model.built and os.listdir(tmp_path) == []


def test_a_pruning_policy_of_the_wrong_type_is_a_type_error():
    model = user_model()
    with pytest.raises(TypeError, match="Received: pruning_policy='x'"):
        prune(model, pruning_policy="x")


def test_an_already_pruned_model_is_refused_and_left_as_it_was():
    pruned = prune(user_model())
    before = snapshot(pruned)
    with pytest.raises(ValueError, match="already pruned") as error:
        prune(pruned)
    assert f"Received: to_prune={pruned.name!r}" in str(error.value)
    assert snapshot(pruned) == before
