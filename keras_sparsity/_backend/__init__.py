"""The only place that branches on the Keras backend: chosen once, here.

Each module offers the same functions:

* `schedules_at(schedules, flags, step, cache)`: `(should_prune, sparsity)`
  per schedule at `step`; a schedule with a `begin_step` that has never
  pruned (its `flags` variable is 0) prunes at its first step at or after
  `begin_step`, so a run that starts past `end_step` still gets its masks.
* `read_int(read)`: the scalar `read()` returns, as a Python int.
* `snapshot(step)`: the step before the update, for `schedules_at`.
* `update_mask(entry, should_prune, compute)`: recomputes `entry.mask` with
  `compute(masked_kernel)` when due and writes `kernel * mask`.
"""

import keras

_name = keras.backend.backend()
if _name == "torch":
    from keras_sparsity._backend.torch import read_int
    from keras_sparsity._backend.torch import schedules_at
    from keras_sparsity._backend.torch import snapshot
    from keras_sparsity._backend.torch import update_mask
elif _name == "jax":
    from keras_sparsity._backend.jax import read_int
    from keras_sparsity._backend.jax import schedules_at
    from keras_sparsity._backend.jax import snapshot
    from keras_sparsity._backend.jax import update_mask
else:
    from keras_sparsity._backend.tensorflow import read_int
    from keras_sparsity._backend.tensorflow import schedules_at
    from keras_sparsity._backend.tensorflow import snapshot
    from keras_sparsity._backend.tensorflow import update_mask

__all__ = ["read_int", "schedules_at", "snapshot", "update_mask"]
