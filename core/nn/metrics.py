"""Built-in metrics, written once against the array API standard (see `losses`).

Each returns the batch mean as a 0-d float array; the trainer averages batches weighted by
their size, so an epoch value is exact for every metric here.
"""

from __future__ import annotations

from typing import Any

from crosstrain.nn.losses import _match_shape, class_targets, mae, mse


def _labels(xp: Any, logits: Any, targets: Any) -> Any:
    """Integer class labels `(B,)` from labels or probability rows."""
    if xp.isdtype(targets.dtype, "integral"):
        return xp.reshape(targets, (-1,))
    return xp.argmax(targets, axis=-1)


def accuracy(xp: Any, logits: Any, targets: Any) -> Any:
    """Share of correct predictions: argmax of `(B, C)` logits, or `logit > 0` for one output."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        predicted = xp.astype(xp.reshape(logits, (-1,)) > 0, logits.dtype)
        return xp.mean(
            xp.astype(
                predicted == xp.reshape(_match_shape(xp, logits, targets), (-1,)), logits.dtype
            )
        )
    predicted = xp.argmax(logits, axis=-1)
    hits = predicted == xp.astype(_labels(xp, logits, targets), predicted.dtype)
    return xp.mean(xp.astype(hits, logits.dtype))


def top_k_accuracy(xp: Any, logits: Any, targets: Any, k: int = 5) -> Any:
    """Share of rows whose target is among the `k` largest logits (ties count in its favour)."""
    target_logit = xp.sum(logits * class_targets(xp, logits, _labels(xp, logits, targets)), axis=-1)
    rank = xp.sum(xp.astype(logits > xp.reshape(target_logit, (-1, 1)), logits.dtype), axis=-1)
    return xp.mean(xp.astype(rank < k, logits.dtype))


BUILTIN_METRICS = {
    "accuracy": accuracy,
    "top_k_accuracy": top_k_accuracy,
    "mse": mse,
    "mae": mae,
}


def weighted_means(
    reports: Any, metric_names: list[str], train_names: list[str] | None = None
) -> dict[str, float]:
    """Host step reports `[rows, value, ...]` (one row per step) → means weighted by rows.

    The values are named `metric_names`, or `train_names` when a report carries one value more
    (train steps that also report `grad_norm`, last).
    """
    import numpy as np

    table = np.asarray(reports, np.float64)
    rows = table[:, 0]
    means = (table[:, 1:] * rows[:, None]).sum(axis=0) / rows.sum()
    names = metric_names
    if train_names and table.shape[1] == len(train_names) + 1:
        names = train_names
    return {name: float(v) for name, v in zip(names, means, strict=True)}
