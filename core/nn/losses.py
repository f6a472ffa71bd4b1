"""Built-in losses, written once against the array API standard.

Every function takes `xp` (the array namespace of the backend at hand, from array-api-compat),
the model output and the targets, and returns the batch mean as a 0-d array. The same code runs
on numpy, torch and jax. A spec names one (`loss: cross_entropy`) or points at its own function
with the same signature (`loss: mypkg.losses:focal`).

Example:
    >>> import numpy as np, array_api_compat.numpy as xp
    >>> float(mse(xp, np.array([1.0, 2.0]), np.array([1.0, 4.0])))
    2.0
"""

from __future__ import annotations

from typing import Any


def _match_shape(xp: Any, outputs: Any, targets: Any) -> Any:
    """Targets as a float array of the outputs' shape (`(B,)` targets fit `(B, 1)` outputs)."""
    targets = xp.astype(targets, outputs.dtype)
    if targets.shape != outputs.shape:
        targets = xp.reshape(targets, outputs.shape)
    return targets


def log_softmax(xp: Any, logits: Any) -> Any:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def one_hot(xp: Any, labels: Any, classes: int, dtype: Any) -> Any:
    """`(B,)` integer labels to `(B, classes)` one-hot rows of `dtype`."""
    index = xp.arange(classes, device=getattr(labels, "device", None))
    return xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(index, (1, -1)), dtype)


def class_targets(xp: Any, logits: Any, targets: Any) -> Any:
    """Targets as probabilities per class: integer labels become one-hot rows."""
    if xp.isdtype(targets.dtype, "integral"):
        return one_hot(xp, targets, logits.shape[-1], logits.dtype)
    return xp.astype(targets, logits.dtype)


def token_log_probs(
    xp: Any, logits: Any, labels: Any, ignore_index: int | None
) -> tuple[Any, Any, Any]:
    """Log-softmax of `(..., C)` logits gathered at integer `labels` `(...)` (no one-hot), flat
    `(N,)`; the `(N,)` float mask of the counted tokens (0 where the label is `ignore_index`);
    and the `(N, C)` log-softmax itself."""
    classes = logits.shape[-1]
    logp = log_softmax(xp, xp.reshape(logits, (-1, classes)))
    flat = xp.reshape(labels, (-1,))
    if ignore_index is None:
        keep = xp.ones_like(xp.astype(flat, logp.dtype))  # shape may be unknown in a TF graph
        index = flat
    else:
        valid = flat != ignore_index
        keep = xp.astype(valid, logp.dtype)
        index = xp.where(valid, flat, xp.zeros_like(flat))
    picked = xp.take_along_axis(logp, xp.reshape(index, (-1, 1)), axis=-1)
    return xp.reshape(picked, (-1,)), keep, logp


def cross_entropy(
    xp: Any,
    logits: Any,
    targets: Any,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
) -> Any:
    """Softmax cross-entropy from logits `(..., C)`: targets are integer labels `(...)` (one per
    row, or per token of a sequence) or probabilities of the logits' shape.

    Integer labels gather the log-softmax at the label (no one-hot); labels equal to
    `ignore_index` (e.g. -100, torch's convention) count neither in the sum nor in the mean, which
    is over the counted tokens (0 when none is counted).
    """
    if xp.isdtype(targets.dtype, "integral"):
        picked, keep, logp = token_log_probs(xp, logits, targets, ignore_index)
        per_token = -picked
        if label_smoothing:
            smooth = -xp.mean(logp, axis=-1)
            per_token = (1.0 - label_smoothing) * per_token + label_smoothing * smooth
        return xp.sum(per_token * keep) / xp.maximum(xp.sum(keep), xp.ones_like(xp.sum(keep)))
    probs = xp.astype(targets, logits.dtype)
    if label_smoothing:
        probs = probs * (1.0 - label_smoothing) + label_smoothing / logits.shape[-1]
    return -xp.mean(xp.sum(probs * log_softmax(xp, logits), axis=-1))


def binary_cross_entropy(xp: Any, logits: Any, targets: Any) -> Any:
    """Sigmoid cross-entropy from logits; targets in [0, 1] of the same size."""
    y = _match_shape(xp, logits, targets)
    per_item = xp.maximum(logits, 0.0) - logits * y + xp.log1p(xp.exp(-xp.abs(logits)))
    return xp.mean(per_item)


def mse(xp: Any, outputs: Any, targets: Any) -> Any:
    """Mean squared error."""
    diff = outputs - _match_shape(xp, outputs, targets)
    return xp.mean(diff * diff)


def mae(xp: Any, outputs: Any, targets: Any) -> Any:
    """Mean absolute error."""
    return xp.mean(xp.abs(outputs - _match_shape(xp, outputs, targets)))


def huber(xp: Any, outputs: Any, targets: Any, delta: float = 1.0) -> Any:
    """Huber loss: quadratic within `delta` of the target, linear beyond."""
    err = xp.abs(outputs - _match_shape(xp, outputs, targets))
    quadratic = xp.minimum(err, delta)
    return xp.mean(0.5 * quadratic * quadratic + delta * (err - quadratic))


BUILTIN_LOSSES = {
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "mse": mse,
    "mae": mae,
    "huber": huber,
}
