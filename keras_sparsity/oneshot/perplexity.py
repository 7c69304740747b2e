"""Perplexity of a causal language model on held-out token ids."""

import math

import numpy as np
from keras import ops


def perplexity(model, token_ids, batch_size=8):
    """`exp` of the mean next-token cross-entropy of `model` on `token_ids`.

    Each row of `token_ids` is one sequence; the model reads all its tokens
    but the last and is scored on predicting tokens 1 to the end. `model`
    maps token ids `(batch, length)` to logits `(batch, length, vocab)`,
    or, like a KerasHub `CausalLM`, a dict `{"token_ids", "padding_mask"}`
    to logits (its functional input is a dict).

    Args:
        model: A causal language model.
        token_ids: Int array `(num_sequences, length)`, `length >= 2`.
        batch_size: Sequences per forward pass.

    Returns:
        A Python float.

    Example: `oneshot.perplexity(lm, held_out_ids)`
    """
    token_ids = np.asarray(token_ids)
    if token_ids.ndim != 2 or token_ids.shape[1] < 2:
        raise ValueError(
            "Argument `token_ids` must be an int array (num_sequences, "
            "length) with length >= 2. Received: token_ids of shape "
            f"{token_ids.shape}"
        )
    takes_dict = _takes_dict(model)
    total, count = 0.0, 0
    for start in range(0, len(token_ids), batch_size):
        batch = token_ids[start : start + batch_size]
        inputs = batch[:, :-1].astype("int32")
        if takes_dict:
            inputs = {
                "token_ids": inputs,
                "padding_mask": np.ones_like(inputs, dtype="int32"),
            }
        logits = ops.cast(model(inputs, training=False), "float32")
        losses = ops.sparse_categorical_crossentropy(
            batch[:, 1:].astype("int32"), logits, from_logits=True
        )
        total += float(ops.convert_to_numpy(ops.sum(losses)))
        count += losses.shape[0] * losses.shape[1]
    return math.exp(total / count)


def _takes_dict(model):
    """True for a functional model whose input is a dict (KerasHub)."""
    try:
        return isinstance(model.input, dict)
    except (AttributeError, ValueError):  # a subclassed model
        return False
