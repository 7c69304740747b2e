"""Custom training loops prune through `SparsityOptimizer`, on each backend.

The standard loop of each backend (gradients for
`model.trainable_variables`, then `optimizer.apply`, or JAX's
`stateless_apply`) with the optimizer wrapped in `SparsityOptimizer` is all
it takes; a plain optimizer is a clear error at its first step. These tests
are the recipes shown in README.md.
"""

import keras
import pytest
from conftest import assert_exact_sparsity
from conftest import assert_weights_follow_masks
from conftest import backend
from conftest import build_simple_dense_model
from conftest import toy_data

import keras_sparsity as sparsity

SCHEDULE = sparsity.PolynomialDecay(
    0.5, 0.8, begin_step=0, end_step=4, frequency=2
)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def batches():
    x, y = toy_data(num_samples=48)
    return [(x[i : i + 8], y[i : i + 8]) for i in range(0, 48, 8)]


def pruned_model():
    return sparsity.prune_low_magnitude(build_simple_dense_model(), SCHEDULE)


@pytest.mark.skipif(backend() != "tensorflow", reason="TensorFlow loop")
def test_tensorflow_gradient_tape_loop():
    import tensorflow as tf

    model = pruned_model()
    optimizer = sparsity.SparsityOptimizer(keras.optimizers.Adam())

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)

    for x, y in batches():
        train_step(x, y)
        assert_weights_follow_masks(model)
    assert_exact_sparsity(model, 0.8)


@pytest.mark.skipif(backend() != "torch", reason="PyTorch loop")
def test_torch_loop():
    import torch

    model = pruned_model()
    optimizer = sparsity.SparsityOptimizer(keras.optimizers.Adam())
    for x, y in batches():
        loss = LOSS(
            torch.as_tensor(y), model(torch.as_tensor(x), training=True)
        )
        model.zero_grad()
        loss.backward()
        variables = model.trainable_variables
        grads = [v.value.grad for v in variables]
        with torch.no_grad():
            optimizer.apply(grads, variables)
        assert_weights_follow_masks(model)
    assert_exact_sparsity(model, 0.8)


@pytest.mark.skipif(backend() != "jax", reason="JAX stateless loop")
def test_jax_stateless_loop():
    import jax

    model = pruned_model()
    optimizer = sparsity.SparsityOptimizer(keras.optimizers.Adam())
    optimizer.build(model.trainable_variables)

    def loss_fn(trainable, non_trainable, x, y):
        y_pred, non_trainable = model.stateless_call(
            trainable, non_trainable, x, training=True
        )
        return LOSS(y, y_pred), non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def train_step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (_, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(
            opt_vars, grads, trainable
        )
        return trainable, non_trainable, opt_vars

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    for x, y in batches():
        state = train_step(state, x, y)
        trainable, non_trainable, opt_vars = state
        for variable, value in zip(model.trainable_variables, trainable):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, opt_vars):
            variable.assign(value)
        assert_weights_follow_masks(model)
    assert int(optimizer.iterations) == 6
    assert_exact_sparsity(model, 0.8)


def test_a_plain_optimizer_on_pruned_kernels_is_an_error():
    model = pruned_model()
    model.compile(keras.optimizers.Adam(), LOSS)  # wrapped: trains
    assert isinstance(model.optimizer, sparsity.SparsityOptimizer)
    optimizer = keras.optimizers.SGD()
    x, y = batches()[0]
    model(x)
    grads = [keras.ops.zeros(v.shape) for v in model.trainable_variables]
    with pytest.raises(RuntimeError, match="SparsityOptimizer"):
        if backend() == "jax":
            optimizer.build(model.trainable_variables)
            optimizer.stateless_apply(
                [v.value for v in optimizer.variables],
                grads,
                [v.value for v in model.trainable_variables],
            )
        else:
            optimizer.apply(grads, model.trainable_variables)
