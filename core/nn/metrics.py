"""Built-in metrics, written once against the array API standard (see `losses`).

Each returns the batch mean as a 0-d float array; the trainer averages batches weighted by
their size, so an epoch value is exact for every metric here.
"""

from __future__ import annotations

from typing import Any

from crosstrain.nn.losses import _match_shape, class_targets, cross_entropy, mae, mse


def _labels(xp: Any, logits: Any, targets: Any) -> Any:
    """Flat integer class labels `(N,)` from labels or probability rows."""
    if xp.isdtype(targets.dtype, "integral"):
        return xp.reshape(targets, (-1,))
    return xp.argmax(xp.reshape(targets, (-1, logits.shape[-1])), axis=-1)


def accuracy(xp: Any, logits: Any, targets: Any, ignore_index: int | None = None) -> Any:
    """Share of correct predictions: argmax of `(..., C)` logits against integer labels `(...)`
    or probability rows, or `logit > 0` for one output. Labels equal to `ignore_index` are not
    counted (the mean is over the other tokens)."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        predicted = xp.astype(xp.reshape(logits, (-1,)) > 0, logits.dtype)
        return xp.mean(
            xp.astype(
                predicted == xp.reshape(_match_shape(xp, logits, targets), (-1,)), logits.dtype
            )
        )
    predicted = xp.argmax(xp.reshape(logits, (-1, logits.shape[-1])), axis=-1)
    labels = xp.astype(_labels(xp, logits, targets), predicted.dtype)
    hits = xp.astype(predicted == labels, logits.dtype)
    if ignore_index is None or not xp.isdtype(targets.dtype, "integral"):
        return xp.mean(hits)
    keep = xp.astype(labels != ignore_index, logits.dtype)
    return xp.sum(hits * keep) / xp.maximum(xp.sum(keep), xp.ones_like(xp.sum(keep)))


def perplexity(xp: Any, logits: Any, targets: Any, ignore_index: int | None = None) -> Any:
    """`exp` of the per-token cross-entropy of `(..., V)` logits at integer labels `(...)`
    (labels equal to `ignore_index` not counted)."""
    return xp.exp(cross_entropy(xp, logits, targets, ignore_index=ignore_index))


def top_k_accuracy(xp: Any, logits: Any, targets: Any, k: int = 5) -> Any:
    """Share of rows whose target is among the `k` largest logits (ties count in its favour)."""
    target_logit = xp.sum(logits * class_targets(xp, logits, _labels(xp, logits, targets)), axis=-1)
    rank = xp.sum(xp.astype(logits > xp.reshape(target_logit, (-1, 1)), logits.dtype), axis=-1)
    return xp.mean(xp.astype(rank < k, logits.dtype))


BUILTIN_METRICS = {
    "accuracy": accuracy,
    "top_k_accuracy": top_k_accuracy,
    "perplexity": perplexity,
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
