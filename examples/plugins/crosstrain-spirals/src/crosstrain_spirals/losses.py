"""A loss and a metric for many-class problems such as the spirals, written once against the
array API (`xp` is numpy, torch or jax.numpy), so they run on every backend.

`conformance_cases` tells `crosstrain conformance` what to check them on: each backend's value
(and, for the loss, its gradient through one SGD step) against the same function evaluated in
numpy. A case names the targets (`labels`, `probabilities`, `binary` or `values`), the number
of outputs (`units`), the function's `options`, and for a metric the `loss` to train with.
"""

from __future__ import annotations

from typing import Any

from crosstrain.nn.losses import class_targets, log_softmax


def focal_loss(xp: Any, logits: Any, targets: Any, gamma: float = 2.0) -> Any:
    """Focal loss (Lin et al., 2017) from logits `(B, C)`: cross-entropy weighted by
    `(1 - p)^gamma`, so well-classified points count less. Targets: labels or probabilities."""
    log_p = log_softmax(xp, logits)
    weight = (1.0 - xp.exp(log_p)) ** gamma
    return -xp.mean(xp.sum(class_targets(xp, logits, targets) * weight * log_p, axis=-1))


focal_loss.conformance_cases = [  # type: ignore[attr-defined]
    {"targets": "labels", "units": 3},
    {"targets": "probabilities", "units": 4, "options": {"gamma": 1.5}, "extended": True},
]


def brier_score(xp: Any, logits: Any, targets: Any) -> Any:
    """Brier score: the squared distance between the softmax probabilities and the targets
    (one-hot for labels), summed over classes, averaged over the batch. Lower is better."""
    probs = xp.exp(log_softmax(xp, logits))
    diff = probs - class_targets(xp, logits, targets)
    return xp.mean(xp.sum(diff * diff, axis=-1))


brier_score.conformance_cases = [{"targets": "labels", "units": 3}]  # type: ignore[attr-defined]
