"""One-shot pruning (`keras_sparsity.oneshot`): Wanda, SparseGPT, magnitude.

Masks are checked against NumPy references, kept counts exactly, SparseGPT
against the other methods on its own objective (the layer's reconstruction
error), the block order against a manual two-step computation, and the
user's model and layers for being left as they were.
"""

import hub_models  # a broken KerasHub install fails the suite
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

    examples = pathlib.Path(__file__).parents[1] / "examples"
    example = examples / "oneshot_shakespeare.py"
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


# Summary and progress bar.


def relative_error(x, before, after):
    """NumPy `||X W - X W'|| / ||X W||` for Dense kernels `(in, out)`."""
    x = x.astype("float64")
    return np.linalg.norm(x @ before - x @ after) / np.linalg.norm(x @ before)


def test_summary_counts_each_layer_and_its_reconstruction_error():
    model = mlp(num_inputs=32, hidden=16, num_outputs=8)
    x = correlated_batch(num_features=32, num_samples=128)
    first = to_numpy(model.layers[0].kernel)
    bias = to_numpy(model.layers[0].bias)
    second = to_numpy(model.layers[1].kernel)
    summaries = {}
    for method in ("magnitude", "sparsegpt"):
        pruned, summary = oneshot.prune(
            model, x, method=method, sparsity=0.75, return_summary=True,
            verbose=False,
        )
        summaries[method] = summary
        assert isinstance(summary, oneshot.OneShotSummary)
        assert [r.shape for r in summary.layers] == [(16, 32), (8, 16)]
        assert [r.num_nonzeros for r in summary.layers] == [128, 32]
        assert [r.sparsity for r in summary.layers] == [0.75, 0.75]
        assert summary.sparsity == 0.75
        assert [b.num_layers for b in summary.blocks] == [1, 1]
        new_first = to_numpy(pruned.layers[0].kernel)
        hidden = np.maximum(x @ new_first + bias, 0.0)  # what block 2 saw
        expected = [
            relative_error(x, first, new_first),
            relative_error(hidden, second, to_numpy(pruned.layers[1].kernel)),
        ]
        errors = [r.reconstruction_error for r in summary.layers]
        np.testing.assert_allclose(errors, expected, rtol=2e-3)
        assert all(r.seconds >= 0 for r in summary.layers)
    for index in range(2):
        gpt = summaries["sparsegpt"].layers[index]
        magnitude = summaries["magnitude"].layers[index]
        assert 0 < gpt.reconstruction_error < magnitude.reconstruction_error
    text = str(summaries["sparsegpt"])
    assert "One-shot sparsegpt (unstructured): 2 kernels in 2 blocks" in text
    assert pruned.layers[1].path in text and "0.7500" in text
    assert summaries["sparsegpt"].to_dict()["layers"][0]["num_nonzeros"] == 128


def test_summary_without_calibration_data_has_no_error():
    _, summary = oneshot.prune(
        mlp(), method="magnitude", sparsity_m_by_n=(2, 4),
        return_summary=True,
    )
    assert [r.reconstruction_error for r in summary.layers] == [None, None]
    assert [r.num_nonzeros for r in summary.layers] == [128, 64]
    assert "2:4" in str(summary)


def test_progress_bar_shows_each_block_when_verbose(capsys):
    x = correlated_batch(num_features=16, num_samples=16)
    oneshot.prune(mlp(), x, verbose=True)
    shown = capsys.readouterr().err
    assert "one-shot wanda" in shown and "2/2" in shown
    oneshot.prune(mlp(), x, verbose=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(verbose="yes"), ValueError, "verbose"),
        (dict(verbose=2), ValueError, "verbose"),
        (dict(return_summary="yes"), TypeError, "return_summary"),
    ],
)
def test_bad_verbose_or_return_summary_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        oneshot.prune(mlp(), np.ones((4, 16), "float32"), **kwargs)


# Convolutions read as matrices over their input patches.


def im2col_2d(x, kernel_size, stride, padding):
    """NumPy patches `(rows, kh * kw * channels)` of NHWC `x`, in the
    kernel's order; `padding` is ((top, bottom), (left, right))."""
    x = np.pad(x, ((0, 0), *padding, (0, 0)))
    kh, kw = kernel_size
    rows = []
    for image in x:
        for top in range(0, x.shape[1] - kh + 1, stride):
            for left in range(0, x.shape[2] - kw + 1, stride):
                rows.append(image[top : top + kh, left : left + kw].ravel())
    return np.stack(rows)


def conv_model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(8, 3, strides=2, padding="same",
                                activation="relu"),
            keras.layers.Conv2D(6, (2, 3), padding="valid"),
        ]
    )


def test_conv2d_wanda_masks_equal_numpy_reference_over_patches():
    model = conv_model()
    x = np.random.default_rng(3).normal(size=(3, 8, 8, 4)).astype("float32")
    x[..., 1] *= 4.0  # one channel with larger norms
    first = to_numpy(model.layers[0].kernel)  # (3, 3, 4, 8)
    bias = to_numpy(model.layers[0].bias)
    pruned = oneshot.prune(model, x, method="wanda", sparsity=0.5)
    # "same" with stride 2 on 8: 4 outputs, one padding row/column at the
    # end (TensorFlow's convention, which Keras follows).
    patches = im2col_2d(x, (3, 3), 2, ((0, 1), (0, 1)))
    weight = first.reshape(36, 8).T
    expected = wanda_reference(weight, patches, keep=18)
    result = to_numpy(pruned.layers[0].kernel).reshape(36, 8).T
    np.testing.assert_array_equal(result != 0, expected == 1)
    # Block 2 is measured on pruned block 1's outputs.
    hidden = np.maximum(
        (patches @ (weight * expected).T).reshape(3, 4, 4, 8) + bias, 0.0
    )
    second = to_numpy(model.layers[1].kernel).reshape(48, 6).T
    expected = wanda_reference(
        second, im2col_2d(hidden, (2, 3), 1, ((0, 0), (0, 0))), keep=24
    )
    result = to_numpy(pruned.layers[1].kernel).reshape(48, 6).T
    np.testing.assert_array_equal(result != 0, expected == 1)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (dict(filters=5, kernel_size=3, padding="causal", dilation_rate=2),
         (2, 10, 3)),
        (dict(filters=4, kernel_size=(3, 2), strides=(2, 1), padding="same",
              dilation_rate=1, data_format="channels_first"), (2, 3, 7, 6)),
    ],
)
def test_conv_input_rows_times_the_matrix_is_the_convolution(layer, shape):
    conv_class = keras.layers.Conv1D if len(shape) == 3 else keras.layers.Conv2D
    conv = conv_class(**layer)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    outputs = to_numpy(conv(x))
    if conv.data_format == "channels_first":
        outputs = np.moveaxis(outputs, 1, -1)
    outputs = outputs - to_numpy(conv.bias)
    view = KernelMatrix(conv)
    rows = to_numpy(view.input_rows(x))
    np.testing.assert_allclose(
        rows @ to_numpy(view.read()).T,
        outputs.reshape(-1, outputs.shape[-1]),
        atol=1e-5,
    )


def test_conv_sparsegpt_keeps_exact_counts_and_beats_magnitude():
    model = keras.Sequential(
        [keras.Input((12, 8)), keras.layers.Conv1D(6, 2, padding="same")]
    )
    x = correlated_batch(num_features=8, num_samples=48).reshape(4, 12, 8)
    errors = {}
    for method in ("magnitude", "sparsegpt"):
        pruned, summary = oneshot.prune(
            model, x, method=method, sparsity_m_by_n=(2, 4),
            return_summary=True,
        )
        kernel = to_numpy(pruned.layers[0].kernel)  # (2, 8, 6)
        # Groups of 4 consecutive input channels at each kernel offset.
        assert ((kernel != 0).reshape(2, 2, 4, 6).sum(axis=2) == 2).all()
        errors[method] = summary.layers[0].reconstruction_error
    assert 0 < errors["sparsegpt"] < errors["magnitude"]


def test_grouped_convolution_is_skipped_with_a_warning():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            keras.layers.Conv2D(4, 3, groups=2),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )
    with pytest.warns(UserWarning, match="groups=2"):
        pruned = oneshot.prune(model, method="magnitude")
    assert np.count_nonzero(to_numpy(pruned.layers[0].kernel)) == 72


# Keras' own quantization after one-shot pruning.


def dense_and_einsum_model():
    return keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, name="dense_in"),
            keras.layers.EinsumDense(
                "ab,bcd->acd", (4, 8), bias_axes="cd", name="einsum"
            ),
            keras.layers.Reshape((32,)),
            keras.layers.Dense(8, name="dense_out"),
        ]
    )


def effective_kernels(model):
    """Each quantized layer's dequantized kernel, read by the layer itself:
    its output on the identity minus its bias (exact where a weight is 0:
    every product is by 0 or 1)."""
    found = {}
    for layer in model.layers:
        if not isinstance(layer, KERNEL_LAYERS):
            continue
        size = layer.kernel.shape[0]
        outputs = to_numpy(layer(np.eye(size, dtype="float32")))
        found[layer.name] = outputs - to_numpy(layer.bias)
    return found


@pytest.mark.parametrize("mode", ["int8", "int4", "float8"])
def test_zeros_survive_keras_quantization_and_save_load(mode, tmp_path):
    from keras_sparsity.oneshot.quantization import quantized_values

    pruned = oneshot.prune(
        dense_and_einsum_model(), method="magnitude", sparsity=0.75
    )
    floats = {
        layer.name: to_numpy(layer.kernel)
        for layer in pruned.layers
        if isinstance(layer, KERNEL_LAYERS)
    }
    with pytest.warns(UserWarning):  # Keras: Reshape has no quantize
        pruned.quantize(mode)
    path = tmp_path / "quantized.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    effective = effective_kernels(loaded)  # the layers' own dequantization
    for model in (pruned, loaded):
        for layer in model.layers:
            if layer.name not in floats:
                continue
            assert layer.quantization_mode == mode
            kept = floats[layer.name] != 0
            np.testing.assert_array_equal(
                quantized_values(layer) != 0, kept
            )
            if model is loaded:
                values = effective[layer.name].reshape(kept.shape)
                np.testing.assert_array_equal(values[~kept], 0.0)
                assert (values[kept] != 0).all()
                np.testing.assert_allclose(
                    values, floats[layer.name], atol=0.05
                )
        info = sparsity.report(model, sizes=False)
        assert [r.num_nonzeros for r in info.rows] == [128, 256, 64]
        assert info.sparsity == 0.75
