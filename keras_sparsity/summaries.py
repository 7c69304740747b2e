"""`PruningSummaries`: TensorBoard scalars of how sparse each pruned weight is.

Event files are written with the `tensorboard` package alone (its event
writer and protos), so logging works on the JAX and PyTorch backends in an
environment where TensorFlow is not installed.
"""

import numbers
import os
import time
import warnings

import keras
import numpy as np
from keras import ops

from keras_sparsity.engine import SparsityOptimizer
from keras_sparsity.walk import pruning_wrappers

UPDATE_FREQS = ("epoch", "batch")


class PruningSummaries(keras.callbacks.Callback):
    """Logs the sparsity of every pruned weight to TensorBoard during training.

    Scalars go to an event file under `log_dir/metrics`, at step
    `model.optimizer.iterations` (the number of optimizer updates so far):

    * `<wrapper>/<weight>/sparsity`: the realised fraction of zeros in the
      weight's mask, e.g. `prune_low_magnitude_dense/kernel/sparsity`;
    * `<wrapper>/<weight>/threshold`: the smallest magnitude among the kept
      weights (0 if none is kept);
    * `<wrapper>/target_sparsity`: the schedule's sparsity at that step,
      `wrapper.pruning_schedule(step)[1]`. The masks in force were set by
      the updates before it (the first update sees step 0), so while the
      schedule is still rising the realised sparsity trails this value;
    * `<wrapper>/<weight>/target_sparsity`: the weight's own target at that
      step, when an `allocation` or `overrides` gave it one;
    * `global_sparsity`: the fraction of zeros over all pruned weights;
    * `<wrapper>/<weight>/dropped` and `.../grown`: under dynamic sparse
      training (`regrowth=`), the weights the last update dropped and grew.

    They are written at the end of every epoch, or of every batch, or
    whenever the step crosses a multiple of `update_freq`, and always when
    training ends, so the final state is in the log (TFMOT's callback logs
    at the start of each epoch only). A step is never written twice. This
    callback writes no losses, histograms or graphs: add a
    `keras.callbacks.TensorBoard` callback next to it for those.

    Needs the `tensorboard` package (`pip install keras-sparsity[tensorboard]`)
    but not TensorFlow.

    Args:
        log_dir: Non-empty string or path-like. Directory of the logs,
            created if missing (it must not be an existing file); the event
            files go to its `metrics` subdirectory. Point
            `tensorboard --logdir` at it.
        update_freq: `"epoch"`, `"batch"` or a positive integer: log at each
            epoch's end, after each batch, or every `update_freq` optimizer
            steps.

    Example:

    ```python
    import keras
    import numpy as np
    import keras_sparsity as sparsity

    model = sparsity.prune_low_magnitude(
        keras.Sequential([keras.Input((10,)), keras.layers.Dense(8)]),
        pruning_schedule=sparsity.PolynomialDecay(
            0.0, 0.8, begin_step=0, end_step=4, frequency=1))
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((32, 10)), np.zeros((32, 8))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[sparsity.PruningSummaries("logs/pruning")])
    # Then: tensorboard --logdir logs/pruning
    ```

    In a custom training loop, where no `fit` calls the callback, call
    `set_model` once, `log(step)` whenever the sparsity should be logged,
    and `close()` at the end:

    ```python
    summaries = sparsity.PruningSummaries("logs/pruning")
    summaries.set_model(model)
    for step in range(1, num_steps + 1):
        train_step(...)
        if step % 100 == 0 or step == num_steps:
            summaries.log(step)
    summaries.close()
    ```
    """

    def __init__(self, log_dir, update_freq="epoch", **kwargs):
        if kwargs:
            raise TypeError(
                "PruningSummaries got unexpected keyword arguments "
                f"{sorted(kwargs)}. It accepts only `log_dir` and "
                "`update_freq`; for histograms, graphs or profiling, add a "
                "`keras.callbacks.TensorBoard` callback next to it. "
                f"Received: {kwargs!r}"
            )
        log_dir = _check_log_dir(log_dir)
        _check_update_freq(update_freq)
        _import_tensorboard()  # Fail now, not after the first epoch.
        super().__init__()
        self.log_dir = log_dir
        self.update_freq = update_freq
        self._writer = None
        self._last_logged = None
        self._previous_step = None

    def log(self, step=None):
        """Writes the current sparsity scalars of the model at `step`.

        Args:
            step: Int, or a scalar tensor or variable. Defaults to
                `model.optimizer.iterations`. Pass it in a custom loop whose
                optimizer is not `model.optimizer`. Nothing is written if
                this step of this model was already logged.
        """
        # Under JAX, reading `Callback.model` first writes the in-flight
        # training state back into the variables (`model.jax_state_sync()`).
        model = self.model
        if model is None:
            raise ValueError(
                "PruningSummaries has no model. Call "
                "`summaries.set_model(model)` before `log()`, or pass it to "
                "`model.fit(..., callbacks=[summaries])`."
            )
        step = self._current_step() if step is None else _as_int(step)
        if self._last_logged == (id(model), step):
            return
        scalars = pruning_scalars(model, step)
        if not scalars:  # No pruned layers: on_train_begin warned.
            return
        if self._writer is None:
            self._writer = _ScalarWriter(os.path.join(self.log_dir, "metrics"))
        self._writer.write(step, scalars)
        self._last_logged = (id(model), step)

    def close(self):
        """Flushes and closes the event file; a later `log` opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def on_train_begin(self, logs=None):
        if not pruning_wrappers(self.model):
            warnings.warn(
                "PruningSummaries: the model being trained has no pruned "
                "layers, so there is no sparsity to log; did you pass the "
                "original model instead of the one `prune_low_magnitude` "
                "returned?",
                stacklevel=2,
            )
        self._previous_step = self._current_step()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        step = self._current_step()
        if self.update_freq == "batch" or self._crossed_multiple(step):
            self.log(step)
        self._previous_step = step

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self.log()

    def on_train_end(self, logs=None):
        self.log()
        self.close()

    def _crossed_multiple(self, step):
        """True if a multiple of `update_freq` was reached since last batch.

        With `steps_per_execution > 1` the step moves by more than one
        between calls, so `step % update_freq == 0` could miss it.
        """
        frequency = self.update_freq
        return step // frequency > self._previous_step // frequency

    def _current_step(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            raise ValueError(
                "PruningSummaries reads the step from "
                "`model.optimizer.iterations`, but the model has no "
                "optimizer. In a custom training loop, pass the step: "
                "`summaries.log(step=int(optimizer.iterations))`."
            )
        return _as_int(optimizer.iterations)


def pruning_scalars(model, step):
    """The scalars `PruningSummaries` logs for `model` at `step`, as a dict.

    Keys are TensorBoard tags (see `PruningSummaries`), values Python
    floats. Under JAX, call `model.jax_state_sync()` first when reading in
    the middle of `fit`.

    Example: `sparsity.summaries.pruning_scalars(model, step=100)`
    """
    scalars = {}
    num_zeros = num_weights = 0
    step_tensor = ops.convert_to_tensor(step, "int32")
    for wrapper in pruning_wrappers(model):
        _, target = wrapper.pruning_schedule(step_tensor)
        scalars[f"{wrapper.name}/target_sparsity"] = float(
            ops.convert_to_numpy(target)
        )
        for index, (weight, mask) in enumerate(
            zip(wrapper.pruned_weights, wrapper.masks)
        ):
            tag = f"{wrapper.name}/{weight.name}"
            if wrapper.kernel_targets is not None:
                scalars[f"{tag}/target_sparsity"] = float(
                    ops.convert_to_numpy(wrapper.kernel_sparsity(index, target))
                )
            kept = ops.convert_to_numpy(mask) > 0
            magnitudes = np.abs(ops.convert_to_numpy(weight)[kept])
            zeros = kept.size - int(np.count_nonzero(kept))
            scalars[f"{tag}/sparsity"] = zeros / kept.size
            scalars[f"{tag}/threshold"] = (
                float(magnitudes.min()) if magnitudes.size else 0.0
            )
            num_zeros += zeros
            num_weights += kept.size
    if num_weights:
        scalars["global_sparsity"] = num_zeros / num_weights
    scalars.update(_regrowth_scalars(model))
    return scalars


def _regrowth_scalars(model):
    """`<wrapper>/<weight>/dropped` and `.../grown` under dynamic sparse
    training: the weights the last update moved."""
    optimizer = getattr(model, "optimizer", None)
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if not isinstance(optimizer, SparsityOptimizer):
        return {}
    names = {
        id(weight): f"{wrapper.name}/{weight.name}"
        for wrapper in pruning_wrappers(model)
        for weight in wrapper.pruned_weights
    }
    scalars = {}
    for kernel, dropped, grown in optimizer.regrowth_counts:
        tag = names.get(id(kernel))
        if tag is not None:
            scalars[f"{tag}/dropped"] = float(ops.convert_to_numpy(dropped))
            scalars[f"{tag}/grown"] = float(ops.convert_to_numpy(grown))
    return scalars


class _ScalarWriter:
    """Appends scalar summaries to a new TensorBoard event file in `logdir`."""

    def __init__(self, logdir):
        event_file_writer, self._event_pb2, self._summary_pb2 = (
            _import_tensorboard()
        )
        self._writer = event_file_writer.EventFileWriter(logdir)

    def write(self, step, scalars):
        value = self._summary_pb2.Summary.Value
        summary = self._summary_pb2.Summary(
            value=[value(tag=tag, simple_value=x) for tag, x in scalars.items()]
        )
        self._writer.add_event(
            self._event_pb2.Event(
                wall_time=time.time(), step=step, summary=summary
            )
        )
        self._writer.flush()

    def close(self):
        self._writer.close()


def _import_tensorboard():
    try:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.summary.writer import event_file_writer
    except ImportError as error:
        raise ImportError(
            "PruningSummaries writes TensorBoard event files with the "
            "`tensorboard` package, which is not installed. Install it with "
            "`pip install keras-sparsity[tensorboard]` (TensorFlow is not "
            "needed)."
        ) from error
    return event_file_writer, event_pb2, summary_pb2


def _check_log_dir(log_dir):
    path = os.fspath(log_dir) if isinstance(log_dir, os.PathLike) else log_dir
    if not isinstance(path, str) or not path:
        raise ValueError(
            "Argument `log_dir` must be a non-empty string or path-like "
            "object: the directory to write TensorBoard logs to, e.g. "
            f"'logs/pruning'. Received: log_dir={log_dir!r}"
        )
    if "://" not in path:  # Local path; gs:// and s3:// are left to the writer.
        # The event file goes to `log_dir/metrics`: the nearest part of that
        # path which exists must be a directory, else TensorBoard fails with
        # a FailedPreconditionError at the end of the first epoch.
        existing = os.path.abspath(os.path.join(path, "metrics"))
        while not os.path.lexists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise ValueError(
                "Argument `log_dir` must be a directory, or a path where one "
                f"can be created, but {existing!r} is an existing file, so "
                "no event file can be written under it. Pass another "
                f"directory, e.g. 'logs/pruning'. Received: log_dir={log_dir!r}"
            )
    return path


def _check_update_freq(update_freq):
    if isinstance(update_freq, str) and update_freq in UPDATE_FREQS:
        return
    if (
        isinstance(update_freq, numbers.Integral)
        and not isinstance(update_freq, bool)
        and update_freq > 0
    ):
        return
    raise ValueError(
        "Argument `update_freq` must be 'epoch', 'batch' or a positive "
        "integer number of optimizer steps, e.g. 100 to log every 100 "
        f"steps. Received: update_freq={update_freq!r}"
    )


def _as_int(step):
    return int(ops.convert_to_numpy(step))
