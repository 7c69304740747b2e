"""Trains a pruned MLP, killed mid-epoch or resumed from its checkpoints.

Run as a script by `test_kill_resume.py`:

* `python kill_resume_fit.py kill DIR VARIANT` trains with
  `BackupAndRestore` (in `DIR/VARIANT/backup`) and `ModelCheckpoint`
  (`DIR/VARIANT/ckpt/epoch_<n>.keras`) and sends itself SIGKILL in the
  middle of the second epoch;
* `python kill_resume_fit.py resume DIR VARIANT...` resumes each variant
  twice: a fresh model with the same `BackupAndRestore` directory, and the
  newest `.keras` checkpoint through `keras.models.load_model` and
  `initial_epoch`; it saves each run's masks, weights and step to
  `DIR/VARIANT/resumed.npz`.

`train_straight(VARIANT)` is the uninterrupted run to compare with. The
variants:

* `magnitude`: `prune_low_magnitude(model, PolynomialDecay(0 -> 0.8 over
  steps 0-20))`, TFMOT's workflow;
* `movement_set`: a model assembled from pruned layers: `hidden` ranked by
  the movement criterion (its scores are optimizer variables), `logits`
  under SET (connections move every 4 steps at a constant 80 %, grown at
  random from a stream keyed by the kernel).
"""

import glob
import json
import os
import signal
import sys

import keras
import numpy as np

import keras_sparsity as sparsity

EPOCHS = 3
BATCH_SIZE = 8
NUM_SAMPLES = 64  # 8 steps per epoch, 24 in all
KILL_AT = (1, 3)  # (epoch, batch): after step 12 of 24
END_STEP = 20
VARIANTS = ("magnitude", "movement_set")


def data():
    rng = np.random.RandomState(0)
    x = rng.rand(NUM_SAMPLES, 10).astype("float32")
    y = rng.randint(0, 5, NUM_SAMPLES)
    return x, y


def build(variant):
    """The pruned MLP. The model and its layers are named, so kernel paths
    are the same in every process, however many models it built before."""
    keras.utils.set_random_seed(0)
    schedule = sparsity.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=END_STEP, frequency=2
    )
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")
    logits = keras.layers.Dense(5, name="logits")
    if variant == "magnitude":
        model = keras.Sequential(
            [keras.Input((10,)), hidden, logits], name="mlp"
        )
        pruned = sparsity.prune_low_magnitude(model, schedule)
    else:
        hidden = sparsity.prune_low_magnitude(
            hidden, schedule, criterion="movement"
        )
        logits = sparsity.prune_low_magnitude(
            logits,
            sparsity.ConstantSparsity(0.8, begin_step=0),
            regrowth=sparsity.SET(update_frequency=4, end_step=END_STEP),
        )
        pruned = keras.Sequential(
            [keras.Input((10,)), hidden, logits], name="mlp"
        )
    pruned.compile(
        optimizer=sparsity.SparsityOptimizer(keras.optimizers.Adam(0.01)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return pruned


def fit(model, callbacks=(), initial_epoch=0):
    x, y = data()
    return model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        initial_epoch=initial_epoch,
        shuffle=False,
        callbacks=list(callbacks),
        verbose=0,
    )


def state(model, history):
    """Masks, pruned kernels, every weight, the step and epochs run."""
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()
    result = {
        "iterations": keras.ops.convert_to_numpy(model.optimizer.iterations),
        "epochs_run": np.array(len(history.history["loss"])),
    }
    wrappers = sparsity.walk.pruning_wrappers(model)
    for index, wrapper in enumerate(wrappers):
        result[f"mask{index}"] = keras.ops.convert_to_numpy(wrapper.masks[0])
        result[f"kernel{index}"] = keras.ops.convert_to_numpy(
            wrapper.pruned_weights[0]
        )
    for index, weight in enumerate(model.weights):
        result[f"weight{index}"] = keras.ops.convert_to_numpy(weight)
    return result


def train_straight(variant):
    model = build(variant)
    return state(model, fit(model))


class KillMidEpoch(keras.callbacks.Callback):
    """Writes where it stops, then SIGKILLs its own process: no cleanup,
    no `on_train_end`, no flush, as when a machine is preempted."""

    def __init__(self, marker):
        super().__init__()
        self.marker = marker
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == KILL_AT:
            with open(self.marker, "w") as f:
                json.dump({"epoch": self.epoch, "batch": batch}, f)
            os.kill(os.getpid(), signal.SIGKILL)


def kill(directory, variant):
    directory = os.path.join(directory, variant)
    os.makedirs(os.path.join(directory, "ckpt"))
    model = build(variant)
    fit(
        model,
        [
            keras.callbacks.BackupAndRestore(os.path.join(directory, "backup")),
            keras.callbacks.ModelCheckpoint(
                os.path.join(directory, "ckpt", "epoch_{epoch}.keras")
            ),
            KillMidEpoch(os.path.join(directory, "killed.json")),
        ],
    )
    raise SystemExit("not killed")


def resume(directory, variant):
    directory = os.path.join(directory, variant)
    # (i) The same script started again: BackupAndRestore restores the
    # model and optimizer as of the last epoch end, and the epoch count.
    model = build(variant)
    backup = keras.callbacks.BackupAndRestore(os.path.join(directory, "backup"))
    resumed = {
        f"backup/{k}": v for k, v in state(model, fit(model, [backup])).items()
    }
    # (ii) The newest full-model checkpoint, loaded and trained on.
    newest = max(
        glob.glob(os.path.join(directory, "ckpt", "epoch_*.keras")),
        key=os.path.getmtime,
    )
    epoch = int(os.path.basename(newest)[len("epoch_") : -len(".keras")])
    model = keras.models.load_model(newest)
    history = fit(model, initial_epoch=epoch)
    resumed.update(
        {f"checkpoint/{k}": v for k, v in state(model, history).items()}
    )
    resumed["checkpoint_epoch"] = np.array(epoch)
    np.savez(os.path.join(directory, "resumed.npz"), **resumed)


if __name__ == "__main__":
    command, directory, *variants = sys.argv[1:]
    for variant in variants:
        {"kill": kill, "resume": resume}[command](directory, variant)
