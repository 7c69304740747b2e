import keras
import numpy as np
import pytest
from keras import ops

from keras_sparsity import ConstantSparsity
from keras_sparsity import PolynomialDecay
from keras_sparsity import PruningSchedule


def evaluate(schedule, step):
    should, value = schedule(ops.convert_to_tensor(step, "int32"))
    return bool(ops.convert_to_numpy(should)), float(
        ops.convert_to_numpy(value)
    )


def assert_table(schedule, table):
    for step, (should, value) in table.items():
        got_should, got_value = evaluate(schedule, step)
        assert got_should == should, step
        assert got_value == pytest.approx(value, abs=1e-4), step


# Values measured on TFMOT 0.8.1 (reference §2.2). Only the end-step rule
# differs, tested separately below.
def test_polynomial_decay_matches_tfmot_short_range():
    assert_table(
        PolynomialDecay(0.2, 0.8, 100, 110, power=3, frequency=2),
        {
            99: (False, 0.2),
            100: (True, 0.2),
            101: (False, 0.3626),
            102: (True, 0.4928),
            105: (False, 0.725),
            110: (True, 0.8),
            111: (False, 0.8),
        },
    )


def test_polynomial_decay_matches_tfmot_tutorial_schedule():
    assert_table(
        PolynomialDecay(0.5, 0.8, 0, 1000),
        {
            0: (True, 0.5),
            1: (False, 0.500899),
            100: (True, 0.5813),
            250: (False, 0.673437),
            500: (True, 0.7625),
            900: (True, 0.7997),
            1000: (True, 0.8),
            1100: (False, 0.8),
        },
    )


def test_polynomial_decay_matches_tfmot_mnist_example():
    assert_table(
        PolynomialDecay(0.1, 0.75, 1000, 5000, frequency=100),
        {
            999: (False, 0.1),
            1000: (True, 0.1),
            1100: (True, 0.147541),
            2000: (True, 0.475781),
            3000: (True, 0.66875),
            4000: (True, 0.739844),
            4900: (True, 0.74999),
            5000: (True, 0.75),
            5100: (False, 0.75),
        },
    )


def test_polynomial_decay_linear_and_decreasing():
    assert_table(
        PolynomialDecay(0.0, 0.5, 0, 10, power=1, frequency=5),
        {0: (True, 0.0), 3: (False, 0.15), 5: (True, 0.25), 10: (True, 0.5)},
    )
    assert evaluate(PolynomialDecay(0.8, 0.2, 0, 10, 1, 1), 5)[1] == (
        pytest.approx(0.5)
    )


def test_polynomial_decay_reaches_final_sparsity_if_frequency_does_not_divide():
    # TFMOT prunes at 0, 100, 200 (0.7936) and never at 250.
    schedule = PolynomialDecay(0.0, 0.8, 0, 250, power=3, frequency=100)
    assert evaluate(schedule, 200) == (True, pytest.approx(0.7936, abs=1e-4))
    assert evaluate(schedule, 250) == (True, pytest.approx(0.8))
    assert evaluate(schedule, 251)[0] is False


def test_polynomial_decay_with_equal_begin_and_end_jumps_to_final():
    schedule = PolynomialDecay(0.2, 0.6, 5, 5, frequency=1)
    assert evaluate(schedule, 4) == (False, pytest.approx(0.2))
    should, value = evaluate(schedule, 5)
    assert should and value == pytest.approx(0.6)
    assert not np.isnan(value)


def test_constant_sparsity_matches_tfmot():
    assert_table(
        ConstantSparsity(0.5, 0),
        {
            0: (True, 0.5),
            1: (False, 0.5),
            99: (False, 0.5),
            100: (True, 0.5),
            12345600: (True, 0.5),
        },
    )
    assert_table(
        ConstantSparsity(0.5, 3, -1, 2),
        {
            1: (False, 0.5),
            2: (False, 0.5),
            3: (True, 0.5),
            4: (False, 0.5),
            5: (True, 0.5),
            7: (True, 0.5),
        },
    )
    assert_table(
        ConstantSparsity(0.5, 100, 200, 10),
        {
            90: (False, 0.5),
            100: (True, 0.5),
            105: (False, 0.5),
            110: (True, 0.5),
            200: (True, 0.5),
            201: (False, 0.5),
            210: (False, 0.5),
        },
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(begin_step=-1), "begin_step should be >= 0"),
        (dict(begin_step=10, end_step=-5), "end_step can be -1 or >= 0"),
        (dict(begin_step=10, end_step=5), "begin_step should be <= end_step"),
        (dict(frequency=0), "frequency should be > 0"),
        (dict(frequency=-5), "frequency should be > 0"),
        (
            dict(target_sparsity=1.0),
            r"target_sparsity must be in range \[0,1\)",
        ),
        (dict(target_sparsity=-0.001), "target_sparsity=-0.001"),
        (dict(target_sparsity=10), "target_sparsity must be in range"),
    ],
)
def test_constant_sparsity_rejects_bad_values(kwargs, match):
    args = dict(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ConstantSparsity(**args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(end_step=-1), "end_step cannot be -1"),
        (dict(initial_sparsity=1.0), "initial_sparsity must be in range"),
        (dict(final_sparsity=-1), "final_sparsity must be in range"),
        (dict(begin_step=-5), "begin_step should be >= 0"),
    ],
)
def test_polynomial_decay_rejects_bad_values(kwargs, match):
    args = dict(
        initial_sparsity=0.2, final_sparsity=0.8, begin_step=0, end_step=10
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PolynomialDecay(**args)


@pytest.mark.parametrize(
    "power", [-1, 0, 0.0, -0.5, float("nan"), float("inf"), np.float32(-2)]
)
def test_polynomial_decay_rejects_a_power_that_is_not_positive(power):
    # power=-1 used to be accepted and gave sparsity -inf at end_step.
    with pytest.raises(ValueError, match="`power`") as info:
        PolynomialDecay(0.2, 0.8, 0, 10, power=power)
    assert str(info.value).endswith(f"Received: power={power!r}")


@pytest.mark.parametrize("power", [1, 0.5, 3, np.float64(2.0)])
def test_polynomial_decay_accepts_a_positive_power_and_reaches_final(power):
    schedule = PolynomialDecay(0.2, 0.8, 0, 10, power=power, frequency=5)
    assert evaluate(schedule, 0)[1] == pytest.approx(0.2, abs=1e-6)
    assert evaluate(schedule, 10) == (True, pytest.approx(0.8, abs=1e-6))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(begin_step=0.0), r"begin_step.*Received: begin_step=0\.0"),
        (dict(end_step="10"), "end_step"),
        (dict(frequency=True), "frequency"),
        (dict(final_sparsity="0.8"), "final_sparsity"),
        (dict(power=None), "power"),
        (dict(power="3"), "power"),
    ],
)
def test_schedules_reject_wrong_types_at_construction(kwargs, match):
    args = dict(
        initial_sparsity=0.2, final_sparsity=0.8, begin_step=0, end_step=10
    )
    args.update(kwargs)
    with pytest.raises(TypeError, match=match):
        PolynomialDecay(**args)


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.7, 10, 20, 10),
        PolynomialDecay(0.2, 0.6, 10, 20, 5, 10),
    ],
)
def test_schedule_config_round_trips(schedule):
    config = schedule.get_config()
    assert type(schedule).from_config(config) == schedule
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)
    )
    assert restored == schedule
    assert restored.__dict__ == schedule.__dict__


def test_schedule_traces_under_compilation():
    schedule = PolynomialDecay(0.5, 0.8, 0, 1000)
    steps = [0, 100, 250, 1000]
    eager = [evaluate(schedule, s) for s in steps]
    b = keras.backend.backend()
    if b == "jax":
        import jax

        compiled = jax.jit(schedule)
    elif b == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(schedule, jit_compile=True)
    else:
        pytest.skip("torch runs schedules eagerly; covered by the eager test")
    for step, (should, value) in zip(steps, eager):
        got_should, got_value = compiled(ops.convert_to_tensor(step, "int32"))
        assert bool(ops.convert_to_numpy(got_should)) == should
        assert float(ops.convert_to_numpy(got_value)) == pytest.approx(value)


def test_pruning_schedule_is_abstract():
    with pytest.raises(TypeError):
        PruningSchedule()
