"""torch's fused loss kernels in place of the shared array-API losses that compute the same."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from crosstrain.nn import losses


def native_loss(fn: Callable[..., Any]) -> Callable[..., Any]:
    """torch's fused kernel in place of the built-in array-API `cross_entropy` (the same math in
    one op and a short backward); any other loss, or unusual shapes, as given."""
    base, options = (fn.func, fn.keywords) if isinstance(fn, functools.partial) else (fn, {})
    if base is not losses.cross_entropy or set(options) - {"label_smoothing"}:
        return fn
    smoothing = float(options.get("label_smoothing", 0.0))

    def cross_entropy(namespace: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.ndim == 2 and targets.ndim == 1 and not targets.is_floating_point():
            return F.cross_entropy(logits, targets, label_smoothing=smoothing)
        if targets.shape == logits.shape and logits.ndim == 2:
            return F.cross_entropy(logits, targets.to(logits.dtype), label_smoothing=smoothing)
        return fn(namespace, logits, targets)

    return cross_entropy
