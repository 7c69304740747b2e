"""One-shot pruning (`keras_sparsity.oneshot`): Wanda, SparseGPT, magnitude.

Masks are checked against NumPy references, kept counts exactly, SparseGPT
against the other methods on its own objective (the layer's reconstruction
error), the block order against a manual two-step computation, and the
user's model and layers for being left as they were.
"""

import keras
import numpy as np
import pytest
from conftest import expected_nonzeros
from conftest import to_numpy

import keras_sparsity as sparsity
from keras_sparsity import oneshot
from keras_sparsity._compat import all_sublayers
from keras_sparsity.oneshot import capture
from keras_sparsity.oneshot.matrix_view import KernelMatrix
from keras_sparsity.oneshot.owl import OutlierWeighted
from keras_sparsity.oneshot.sparsegpt import sparsegpt_prune

hub_models = pytest.importorskip("hub_models")

KERNEL_LAYERS = (keras.layers.Dense, keras.layers.EinsumDense)


def mlp(num_inputs=16, hidden=16, num_outputs=8, activation="relu"):
    return keras.Sequential(
        [
            keras.Input((num_inputs,)),
            keras.layers.Dense(hidden, activation=activation),
            keras.layers.Dense(num_outputs),
        ]
    )


def kernels(model):
    """Every Dense/EinsumDense kernel of `model` as NumPy, by layer path."""
    return {
        layer.path: to_numpy(layer.kernel)
        for layer in all_sublayers(model)
        if isinstance(layer, KERNEL_LAYERS)
    }


def matrix(kernel):
    """A Dense kernel `(in, out)` as the papers' `(out, in)`."""
    return kernel.T


def wanda_reference(weight, x, keep):
    """NumPy Wanda mask of `(out, in)` `weight`: `keep` per row, ties to
    the lowest input index (a stable sort)."""
    scores = np.abs(weight) * np.sqrt((x.astype("float64") ** 2).sum(0))
    mask = np.zeros_like(weight)
    for row, values in enumerate(scores.astype("float32")):
        order = np.argsort(-values, kind="stable")
        mask[row, order[:keep]] = 1.0
    return mask


def wanda_reference_m_by_n(weight, x, m, n):
    scores = np.abs(weight) * np.sqrt((x.astype("float64") ** 2).sum(0))
    scores = scores.astype("float32")
    mask = np.zeros_like(weight)
    for row in range(weight.shape[0]):
        for start in range(0, weight.shape[1], n):
            order = np.argsort(-scores[row, start : start + n], kind="stable")
            mask[row, start + order[: n - m]] = 1.0
    return mask


def tied_layer_and_batch():
    """A Dense(16 -> 6) with many equal weights and a batch whose feature
    norms repeat, so ties decide many positions."""
    rng = np.random.default_rng(1)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(6)])
    kernel = rng.choice([-3, -2, -1, 1, 2, 3], size=(16, 6)) / 4
    kernel = kernel.astype("float32")
    model.layers[0].kernel.assign(kernel)
    x = np.repeat(rng.integers(1, 3, size=(4, 8)), 2, axis=1).astype("float32")
    x[:, ::5] *= 3.0
    return model, kernel, x


def test_wanda_masks_equal_numpy_reference_per_output_row():
    model, kernel, x = tied_layer_and_batch()
    pruned = oneshot.prune(model, x, method="wanda", sparsity=0.5)
    result = matrix(to_numpy(pruned.layers[0].kernel))
    expected = wanda_reference(matrix(kernel), x, keep=8)
    np.testing.assert_array_equal(result != 0, expected == 1)
    np.testing.assert_array_equal(result, matrix(kernel) * expected)
    assert ((result != 0).sum(axis=1) == 8).all()


def test_wanda_2_4_masks_equal_numpy_reference_per_group():
    model, kernel, x = tied_layer_and_batch()
    pruned = oneshot.prune(model, x, method="wanda", sparsity_m_by_n=(2, 4))
    result = matrix(to_numpy(pruned.layers[0].kernel))
    expected = wanda_reference_m_by_n(matrix(kernel), x, 2, 4)
    np.testing.assert_array_equal(result != 0, expected == 1)
    groups = (result != 0).reshape(6, 4, 4).sum(axis=2)
    assert (groups == 2).all()


def correlated_batch(num_features=32, num_samples=256, seed=0):
    """Inputs whose features mix 4 latent factors plus a little noise."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(num_samples, 4))
    mixing = rng.normal(size=(4, num_features))
    noise = 0.1 * rng.normal(size=(num_samples, num_features))
    return (latent @ mixing + noise).astype("float32")


@pytest.mark.parametrize("m_by_n", [None, (2, 4)])
def test_sparsegpt_reconstructs_the_layer_better_than_wanda_and_magnitude(
    m_by_n,
):
    x = correlated_batch()
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16)])
    kernel = to_numpy(model.layers[0].kernel)
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        pruned = oneshot.prune(
            model, x, method=method, sparsity=0.5, sparsity_m_by_n=m_by_n
        )
        new = to_numpy(pruned.layers[0].kernel)
        errors[method] = float(
            np.linalg.norm(x @ kernel - x @ new) / np.linalg.norm(x @ kernel)
        )
    print(f"relative ||WX - W'X||, m_by_n={m_by_n}: {errors}")
    assert errors["sparsegpt"] < errors["wanda"]
    assert errors["sparsegpt"] < errors["magnitude"]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("m_by_n", [None, (2, 4), (4, 8)])
def test_every_kernel_keeps_its_exact_count(method, m_by_n):
    model = mlp(num_inputs=24, hidden=16, num_outputs=8)
    x = correlated_batch(num_features=24, num_samples=64)
    pruned = oneshot.prune(
        model, x, method=method, sparsity=0.7, sparsity_m_by_n=m_by_n
    )
    for kernel in kernels(pruned).values():
        weight = matrix(kernel)
        out, size_in = weight.shape
        kept = weight != 0
        if m_by_n is not None:
            m, n = m_by_n
            groups = kept.reshape(out, size_in // n, n).sum(axis=2)
            assert (groups == n - m).all()
        elif method == "wanda":
            per_row = expected_nonzeros(size_in, 0.7)
            assert (kept.sum(axis=1) == per_row).all()
        else:
            assert kept.sum() == expected_nonzeros(weight.size, 0.7)


def test_block_two_is_measured_on_pruned_block_one():
    model = mlp()
    x = correlated_batch(num_features=16, num_samples=64)
    first = to_numpy(model.layers[0].kernel)
    bias = to_numpy(model.layers[0].bias)
    second = to_numpy(model.layers[1].kernel)
    pruned = oneshot.prune(model, x, method="wanda", sparsity=0.5)

    # By hand: prune block 1, run it, then measure block 2 on its output.
    first_mask = wanda_reference(matrix(first), x, keep=8)
    hidden = np.maximum(x @ (matrix(first) * first_mask).T + bias, 0.0)
    expected = wanda_reference(matrix(second), hidden, keep=8)
    result = matrix(to_numpy(pruned.layers[1].kernel))
    np.testing.assert_array_equal(result != 0, expected == 1)
    dense_hidden = np.maximum(x @ first + bias, 0.0)
    assert not np.array_equal(
        wanda_reference(matrix(second), dense_hidden, keep=8), expected
    ), "the test needs a case where block 1's pruning changes block 2's mask"


def test_sparsegpt_block_two_uses_the_hessian_of_pruned_block_one():
    model = mlp()
    x = correlated_batch(num_features=16, num_samples=64)
    second = model.layers[1]
    pruned = oneshot.prune(model, x, method="sparsegpt", sparsity=0.5)
    hidden = to_numpy(pruned.layers[0](x))
    expected, _ = sparsegpt_prune(
        matrix(to_numpy(second.kernel)), hidden.T @ hidden, 0.5
    )
    np.testing.assert_allclose(
        matrix(to_numpy(pruned.layers[1].kernel)),
        to_numpy(expected),
        rtol=1e-4,
        atol=1e-5,
    )


def assert_calls_restored(model):
    for layer in all_sublayers(model):
        assert "call" not in vars(layer), layer.name


def test_user_model_and_layer_calls_are_unchanged():
    model = mlp()
    x = correlated_batch(num_features=16, num_samples=32)
    before = [to_numpy(w) for w in model.weights]
    pruned = oneshot.prune(model, x, method="sparsegpt")
    assert pruned is not model and type(pruned) is type(model)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(weight), value)
    assert_calls_restored(model)
    assert_calls_restored(pruned)


def test_capture_restores_layers_when_the_calibration_raises_midway():
    model = mlp()
    dense = model.layers[0]
    stats = [capture.InputStatistics(KernelMatrix(dense), "hessian")]
    batches = [np.ones((2, 16), "float32"), None]
    with pytest.raises(Exception):
        with capture.capture(stats, stop_after=model.layers[1]):
            for batch in batches:
                model(batch)
    assert_calls_restored(model)
    assert stats[0].num_rows == 2


def test_a_batch_the_model_cannot_run_leaves_the_model_unchanged_in_place():
    model = mlp()
    before = [to_numpy(w) for w in model.weights]
    batches = [np.ones((2, 16), "float32"), np.ones((2, 5), "float32")]
    with pytest.raises(ValueError, match="calibration_data"):
        oneshot.prune(model, batches, inplace=True)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(weight), value)
    assert_calls_restored(model)


def test_inplace_prunes_and_returns_the_model_itself():
    model = mlp()
    x = correlated_batch(num_features=16, num_samples=32)
    assert (
        oneshot.prune(model, iter([x[:16], (x[16:], None)]), inplace=True)
        is model
    )
    for kernel in kernels(model).values():
        assert ((matrix(kernel) != 0).sum(axis=1) == 8).all()


def test_gpt2_backbone_pruned_end_to_end_saved_and_loaded(tmp_path):
    model = hub_models.gpt2_backbone()
    batch = hub_models.gpt2_inputs()
    before = kernels(model)
    pruned = oneshot.prune(
        model, [batch, batch], method="sparsegpt", sparsity_m_by_n=(2, 4)
    )
    assert type(pruned) is type(model)
    after = kernels(pruned)
    assert len(after) == 12  # q, k, v, o and 2 feed-forward, 2 blocks
    for path, kernel in before.items():
        np.testing.assert_array_equal(kernels(model)[path], kernel)
        assert (after[path] != 0).sum() == kernel.size // 2, path
    path = tmp_path / "gpt2.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(
        to_numpy(loaded(batch)), to_numpy(pruned(batch)), atol=1e-5
    )
    for path, kernel in kernels(loaded).items():
        np.testing.assert_array_equal(kernel, after[path])


def test_gpt2_attention_is_pruned_per_output_over_its_einsum_inputs():
    model = hub_models.gpt2_backbone()
    batch = hub_models.gpt2_inputs()
    pruned = oneshot.prune(
        model, batch, sparsity=0.75, layers="transformer_layer_1/.*attention"
    )
    for path, kernel in kernels(pruned).items():
        if "transformer_layer_1/self_attention" not in path:
            assert (kernel != 0).all(), path
            continue
        (layer,) = [x for x in all_sublayers(pruned) if x.path == path]
        weight = to_numpy(KernelMatrix(layer).read())
        assert ((weight != 0).sum(axis=1) == weight.shape[1] // 4).all(), path


def test_keep_masks_fine_tuning_keeps_the_one_shot_masks():
    model = mlp()
    x = correlated_batch(num_features=16, num_samples=32)
    y = np.zeros((32,), "int32")
    wrapped = oneshot.prune(model, x, method="wanda", keep_masks=True)
    wrappers = sparsity.walk.pruning_wrappers(wrapped)
    assert len(wrappers) == 2
    masks = [to_numpy(w.masks[0]) for w in wrappers]
    for wrapper, mask in zip(wrappers, masks):
        assert int(mask.sum()) == mask.size // 2
        kernel = to_numpy(wrapper.pruned_weights[0])
        np.testing.assert_array_equal(kernel != 0, mask == 1)
    wrapped.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    wrapped.fit(x, y, batch_size=8, epochs=1, verbose=0)
    if keras.backend.backend() == "jax":
        wrapped.jax_state_sync()
    for wrapper, mask in zip(wrappers, masks):
        np.testing.assert_array_equal(to_numpy(wrapper.masks[0]), mask)
        kernel = to_numpy(wrapper.pruned_weights[0])
        np.testing.assert_array_equal(kernel[mask == 0], 0.0)
        assert (kernel[mask == 1] != 0).all()


def test_owl_keeps_outlier_blocks_denser_at_the_target_mean():
    owl = OutlierWeighted(outlier_threshold=5, max_deviation=0.08)
    assert owl.sparsities([0.01, 0.03, 0.02], 0.7) == pytest.approx(
        [0.78, 0.62, 0.70]
    )
    model = mlp(activation=None)
    x = correlated_batch(num_features=16, num_samples=32)
    x[:, 3] *= 50.0  # outlier features for the first layer only
    pruned = oneshot.prune(model, x, sparsity=0.5, allocation="owl")
    first, second = (matrix(k) for k in kernels(pruned).values())
    assert (first != 0).sum(axis=1)[0] == expected_nonzeros(16, 0.42)
    assert (second != 0).sum(axis=1)[0] == expected_nonzeros(16, 0.58)


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(10, 4),
            keras.layers.Dense(10, kernel_initializer="zeros"),
        ]
    )
    ids = np.random.default_rng(0).integers(0, 10, size=(3, 6))
    assert oneshot.perplexity(model, ids, batch_size=2) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="obs"), "method"),
        (dict(sparsity=1.0), "sparsity"),
        (dict(sparsity=-0.1), "sparsity"),
        (dict(sparsity_m_by_n=(4, 2)), "sparsity_m_by_n"),
        (dict(sparsity_m_by_n=(1, 3)), "sparsity_m_by_n"),
        (dict(layers="no_such_layer"), "layers"),
        (dict(allocation="erk"), "allocation"),
        (dict(allocation="owl", sparsity_m_by_n=(2, 4)), "sparsity_m_by_n"),
        (dict(calibration_data=[]), "calibration_data"),
        (dict(calibration_data=None), "calibration_data"),
        (
            dict(calibration_data=np.zeros((0, 16), "float32")),
            "calibration_data",
        ),
    ],
)
def test_bad_arguments_raise_before_the_model_changes(kwargs, match):
    model = mlp()
    before = [to_numpy(w) for w in model.weights]
    kwargs.setdefault("calibration_data", np.ones((4, 16), "float32"))
    with pytest.raises(ValueError, match=match):
        oneshot.prune(model, inplace=True, **kwargs)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(weight), value)


def test_shakespeare_example_runs_tiny(tmp_path):
    """`examples/oneshot_shakespeare.py` end to end, on a tiny text."""
    import pathlib
    import subprocess
    import sys

    example = (
        pathlib.Path(__file__).parents[1] / "examples" / "oneshot_shakespeare.py"
    )
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question.\n" * 40)
    done = subprocess.run(
        [sys.executable, str(example), "--text", str(text), "--seq-len", "16",
         "--num-train", "64", "--num-val", "16", "--num-calibration", "16",
         "--epochs", "1", "--settings", "2:4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("dense perplexity") for line in lines)
    rows = [line.split() for line in lines if line.split()[:1] in (
        ["50%"], ["60%"], ["70%"], ["2:4"])]
    assert len(rows) == 4  # 2:4 by 3 methods, and OWL at 70 %
    assert all(float(row[2]) > 1.0 for row in rows)


@pytest.mark.parametrize(
    "name, method",
    [("bert", "wanda"), ("llama", "wanda"), ("gemma", "sparsegpt")],
)
def test_keras_hub_backbones_are_pruned_exactly(name, method):
    """BERT, Llama (grouped key/value heads) and Gemma from small configs:
    every block kernel at exactly half, per output row for Wanda."""
    build, make_inputs = hub_models.BACKBONES[name]
    model = build()
    batch = make_inputs()
    before = [to_numpy(w) for w in model.weights]
    pruned = oneshot.prune(model, [batch], method=method, sparsity=0.5)
    assert type(pruned) is type(model)
    kernels = [
        w for w in pruned.weights
        if "kernel" in w.path and "embedding" not in w.path
    ]
    assert len(kernels) >= 12
    for kernel in kernels:
        values = to_numpy(kernel)
        assert np.count_nonzero(values) == values.size // 2, kernel.path
    outputs = pruned(batch)
    if isinstance(outputs, dict):
        outputs = outputs["sequence_output"]
    assert np.all(np.isfinite(to_numpy(outputs)))
    for old, new in zip(before, model.weights):  # the user's model
        np.testing.assert_array_equal(old, to_numpy(new))
