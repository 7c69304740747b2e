"""The only place that branches on the Keras backend: chosen once, here.

Each module offers the same functions:

* `schedules_at(schedules, flags, step, cache)`: `(should_prune, sparsity)`
  per schedule at `step`; a schedule with a `begin_step` that has never
  pruned (its `flags` variable is 0) prunes at its first step at or after
  `begin_step`, so a run that starts past `end_step` still gets its masks.
* `read_int(read)`: the scalar `read()` returns, as a Python int.
* `snapshot(step)`: the step before the update, for `schedules_at`.
* `update_masks(entries, should_prune, compute, after=None)`: when due,
  recomputes the masks of `entries` (a group ranked together) with
  `compute(masked_kernels, old_masks)`, and, given `after = (variables,
  values_of)`, assigns `values_of(old_masks, new_masks)` to `variables`;
  writes every `kernel * mask`.
"""

import keras

_name = keras.backend.backend()
if _name == "torch":
    from keras_sparsity._backend.torch import read_int
    from keras_sparsity._backend.torch import schedules_at
    from keras_sparsity._backend.torch import snapshot
    from keras_sparsity._backend.torch import update_masks
elif _name == "jax":
    from keras_sparsity._backend.jax import read_int
    from keras_sparsity._backend.jax import schedules_at
    from keras_sparsity._backend.jax import snapshot
    from keras_sparsity._backend.jax import update_masks
else:
    from keras_sparsity._backend.tensorflow import read_int
    from keras_sparsity._backend.tensorflow import schedules_at
    from keras_sparsity._backend.tensorflow import snapshot
    from keras_sparsity._backend.tensorflow import update_masks

__all__ = ["read_int", "schedules_at", "snapshot", "update_masks"]
