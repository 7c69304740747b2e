"""TFMOT's pruning-overview table, reproduced at the scale of this machine.

TFMOT's pruning overview reports, per model, the non-sparse accuracy, the
accuracy at 50 % unstructured ("random") sparsity and with structured 2:4
sparsity, and the BLEU of an LSTM translation model at 80 % sparsity.
This script fills a table of the same form with keras_sparsity on data of
this workplace:

* MNIST (8,000 train / 2,000 test images of the t10k split, fixed seed),
  TFMOT's tutorial CNN (`examples/mnist_cnn.py::build_cnn`) and a small
  MobileNet-style depthwise-separable CNN
  (`examples/mobilenet_mnist.py::build_mobilenet`): dense, unstructured
  50 % and 2:4, each pruned variant fine-tuned from the same dense weights
  with `PolynomialDecay(0 -> 0.5)` over the first half of fine-tuning. The
  2:4 check counts, in the stripped kernels, the groups of 4 consecutive
  weights along the input axis with at most 2 non-zeros.
* A character-level LSTM language model on tiny Shakespeare
  (`examples/lstm_shakespeare.py`): dense vs 80 % sparse (every kernel,
  `PolynomialDecay(0 -> 0.8)`), validation character accuracy and
  perplexity.

Accuracies and sparsities are of the stripped models (`strip_pruning`).
The run uses one Keras backend (`--backend`, default jax), chosen before
Keras is imported. Sizes are chosen so the full run takes about 5 minutes
on 2 CPU cores; `--quick` is a smoke run (under 40 s) whose accuracies
mean nothing. The machine is shared: wall times are for context only.

Usage (from the repository root):

```
.venv/bin/python benchmarks/overview.py                   # jax, ~5 min
.venv/bin/python benchmarks/overview.py --backend torch --out overview.md
.venv/bin/python benchmarks/overview.py --quick           # smoke, < 40 s
.venv/bin/python benchmarks/overview.py --data-dir /path/to/mnist \
    --text /path/to/text.txt
```
"""

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
from pathlib import Path

from provenance import machine
from provenance import revision

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"
DEFAULT_TEXT = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
BACKENDS = ("jax", "tensorflow", "torch")
# Sizes of the full run and of --quick.
SETTINGS = {
    "full": {
        "num_train": 8000,
        "num_test": 2000,
        "cnn_epochs": (4, 2),
        "mobilenet_epochs": (4, 2),
        "mobilenet_size": {"stem_filters": 16, "block_filters": (32, 64, 64)},
        "lstm_epochs": (4, 4),
        "lstm_windows": (8192, 1024),
        "lstm_units": 128,
    },
    "quick": {
        "num_train": 1024,
        "num_test": 500,
        "cnn_epochs": (1, 1),
        "mobilenet_epochs": (1, 1),
        "mobilenet_size": {"stem_filters": 8, "block_filters": (16,)},
        "lstm_epochs": (1, 1),
        "lstm_windows": (256, 64),
        "lstm_units": 32,
    },
}
SEQ_LEN = 64
# The TFMOT tutorial's Adam() default, as in benchmarks/tfmot_recipe.py.
CNN_LEARNING_RATE = 1e-3
# TFMOT's published overview (g3doc/guide/pruning/index.md), for context.
TFMOT_PUBLISHED = """\
| TFMOT's model (ImageNet) | non-sparse top-1 | random sparse 50 % | 2:4 |
|---|---|---|---|
| InceptionV3 | 78.1 % | 78.0 % | 75.8 % |
| MobileNetV1 224 | 71.04 % | 70.84 % | 67.35 % |
| MobileNetV2 224 | 71.77 % | 69.64 % | 66.75 % |

| TFMOT's model | non-sparse BLEU | 80 % sparse BLEU |
|---|---|---|
| GNMT EN-DE | 26.77 | 26.86 |
| GNMT DE-EN | 29.47 | 29.50 |"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=BACKENDS, default="jax")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small data, 1 epoch per phase (< 40 s)",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    return parser.parse_args(argv)


def import_examples(backend):
    """Selects `backend`, then imports the example modules with Keras."""
    os.environ["KERAS_BACKEND"] = backend
    if backend == "torch":
        # torch before TensorFlow, which Keras may import for tf.data.
        importlib.import_module("torch")
    keras = importlib.import_module("keras")
    if keras.backend.backend() != backend:
        raise RuntimeError(
            f"Keras was already imported with backend "
            f"{keras.backend.backend()!r}; run this script in a fresh "
            f"process. Received: --backend={backend}"
        )
    sys.path.insert(0, str(EXAMPLES))
    return (
        keras,
        importlib.import_module("datasets"),
        importlib.import_module("mnist_cnn"),
        importlib.import_module("mobilenet_mnist"),
        importlib.import_module("lstm_shakespeare"),
    )


def kernel_size(model):
    """Number of weights in the kernels (rank >= 2) of `model`."""
    return sum(
        int(value.size) for value in model.get_weights() if value.ndim >= 2
    )


def run(args):
    """Trains every model of the table.

    Returns:
        `(classifiers, language, versions)`: `classifiers` maps a model name
        to `(kernel weights, run_variants results)`, `language` is
        `(kernel weights, lstm_shakespeare.run results)`, `versions` a
        string.
    """
    keras, datasets, mnist_cnn, mobilenet_mnist, lstm = import_examples(
        args.backend
    )
    settings = SETTINGS["quick" if args.quick else "full"]
    data = datasets.load_mnist(
        args.data_dir, settings["num_train"], settings["num_test"]
    )
    builders = {
        "tutorial CNN": (
            lambda: mnist_cnn.build_cnn(keras),
            settings["cnn_epochs"],
            CNN_LEARNING_RATE,
        ),
        "MobileNet-style CNN": (
            lambda: mobilenet_mnist.build_mobilenet(
                keras, **settings["mobilenet_size"]
            ),
            settings["mobilenet_epochs"],
            mobilenet_mnist.LEARNING_RATE,
        ),
    }
    classifiers = {}
    for name, (build, epochs, learning_rate) in builders.items():
        print(f"training {name} ...", file=sys.stderr, flush=True)
        results = mobilenet_mnist.run_variants(
            build, data, *epochs, learning_rate=learning_rate
        )
        classifiers[name] = (kernel_size(results["dense"]["model"]), results)

    print("training char LSTM ...", file=sys.stderr, flush=True)
    num_train, num_val = settings["lstm_windows"]
    train_data, val_data, vocabulary_size = lstm.load_windows(
        args.text, SEQ_LEN, num_train, num_val
    )
    epochs, fine_tune_epochs = settings["lstm_epochs"]
    language = lstm.run(
        train_data,
        val_data,
        vocabulary_size,
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        units=settings["lstm_units"],
    )
    framework = importlib.import_module(args.backend)
    versions = (
        f"Python {platform.python_version()}, keras {keras.__version__}, "
        f"{args.backend} {framework.__version__}"
    )
    language = (kernel_size(language["dense"]["model"]), language)
    return classifiers, language, versions


def classifier_table(classifiers):
    lines = [
        "| model | kernel weights | non-sparse acc | unstructured 50 % acc "
        "| 2:4 acc | realised sparsity (unstructured / 2:4) "
        "| 2:4 groups conforming |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (num_weights, results) in classifiers.items():
        dense = results["dense"]
        unstructured = results["unstructured 50 %"]
        structured = results["2:4"]
        lines.append(
            f"| {name} | {num_weights:,} "
            f"| {dense['accuracy']:.2%} | {unstructured['accuracy']:.2%} "
            f"| {structured['accuracy']:.2%} "
            f"| {unstructured['sparsity']:.4f} / "
            f"{structured['sparsity']:.4f} "
            f"| {structured['conforming']:,} of {structured['groups']:,} |"
        )
    return "\n".join(lines)


def language_table(language):
    num_weights, results = language
    dense, sparse = results["dense"], results["80% sparse"]
    return "\n".join(
        [
            "| model | kernel weights | non-sparse char acc "
            "| non-sparse perplexity | 80 % sparse char acc "
            "| 80 % sparse perplexity | realised sparsity |",
            "|---|---|---|---|---|---|---|",
            f"| char LSTM | {num_weights:,} "
            f"| {dense['accuracy']:.2%} | {dense['perplexity']:.3f} "
            f"| {sparse['accuracy']:.2%} | {sparse['perplexity']:.3f} "
            f"| {sparse['sparsity']:.4f} |",
        ]
    )


def timing_table(classifiers, language):
    lines = [
        "| model | variant | training wall time |",
        "|---|---|---|",
    ]
    models = dict(classifiers, **{"char LSTM": language})
    for name, (_, results) in models.items():
        for variant, result in results.items():
            lines.append(f"| {name} | {variant} | {result['seconds']:.1f} s |")
    return "\n".join(lines)


def markdown(classifiers, language, versions, args, seconds, loads):
    settings = SETTINGS["quick" if args.quick else "full"]
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    mode = "quick (smoke) run" if args.quick else "full run"
    cnn, mobilenet = settings["cnn_epochs"], settings["mobilenet_epochs"]
    size = settings["mobilenet_size"]
    lstm_epochs, (num_train, num_val) = (
        settings["lstm_epochs"],
        settings["lstm_windows"],
    )
    return "\n\n".join(
        [
            "# TFMOT's pruning overview at the scale of this machine",
            f"{when}, {mode}, backend {args.backend}, commit {revision()}; "
            f"{machine()}, shared with other jobs (1-min load average "
            f"{loads[0]:.1f} before, {loads[1]:.1f} after); {versions}; "
            f"{seconds / 60:.1f} min in all.",
            "## MNIST classifiers",
            f"{settings['num_train']:,} train / {settings['num_test']:,} "
            "test images, batch 128. Tutorial CNN: Reshape -> Conv2D(12, 3) "
            "-> MaxPool -> Flatten -> Dense(10), Adam 1e-3. "
            "MobileNet-style: Conv2D("
            f"{size['stem_filters']}, 3, stride 2), then depthwise-separable "
            "blocks, DepthwiseConv2D(3) (stride 2 in the first) and a 1x1 "
            "Conv2D of "
            f"{'/'.join(str(f) for f in size['block_filters'])} filters, "
            "each followed by BatchNorm and ReLU, then "
            "GlobalAveragePooling2D -> Dense(10), Adam 3e-3. Epochs, dense + "
            f"fine-tuning per pruned variant: CNN {cnn[0]} + {cnn[1]}, "
            f"MobileNet-style {mobilenet[0]} + {mobilenet[1]}; each pruned "
            "variant starts from the "
            "same dense weights, `PolynomialDecay(0 -> 0.5, frequency=10)` "
            "ending halfway. Whole models are pruned: "
            "under 2:4 a layer with a single input channel (both stems) "
            "keeps its weights, and a depthwise 3x3 kernel is grouped along "
            "its 3 columns, keeping 2, so realised 2:4 sparsity is below "
            "0.5. A 2:4 group (4 consecutive weights along the input axis, "
            "or a shorter last group) conforms with at most 2 non-zeros.",
            classifier_table(classifiers),
            "## Character LSTM on tiny Shakespeare",
            f"Embedding(32) -> LSTM({settings['lstm_units']}) -> Dense, "
            f"{num_train:,} training windows of {SEQ_LEN} characters from "
            f"the first 90 % of the text, validation on the first "
            f"{num_val:,} windows of the last 10 %; batch 64, Adam 1e-2. "
            f"Epochs, dense + fine-tuning: {lstm_epochs[0]} + "
            f"{lstm_epochs[1]}, pruning with `PolynomialDecay(0 -> 0.8, "
            "frequency=10)` ending halfway, all kernels pruned. "
            "Perplexity is per character.",
            language_table(language),
            "## TFMOT's published numbers (for the form of the table)",
            TFMOT_PUBLISHED,
            "## Training wall times",
            timing_table(classifiers, language),
        ]
    )


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    classifiers, language, versions = run(args)
    loads = (load_before, os.getloadavg()[0])
    text = markdown(
        classifiers,
        language,
        versions,
        args,
        time.perf_counter() - start,
        loads,
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
