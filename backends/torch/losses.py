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
    one op and a short backward); per-token labels `(..., T)` against logits `(..., T, V)` go
    flat to `F.cross_entropy(..., ignore_index=)`; any other loss, or unusual shapes, as given."""
    base, options = (fn.func, fn.keywords) if isinstance(fn, functools.partial) else (fn, {})
    if base is not losses.cross_entropy or set(options) - {"label_smoothing", "ignore_index"}:
        return fn
    smoothing = float(options.get("label_smoothing", 0.0))
    ignore = options.get("ignore_index")
    ignore_index = -100 if ignore is None else int(ignore)

    def cross_entropy(namespace: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        integer = not targets.is_floating_point()
        if integer and logits.shape[:-1] == targets.shape and ignore is None:
            if logits.ndim == 2:
                return F.cross_entropy(logits, targets, label_smoothing=smoothing)
            flat = logits.reshape(-1, logits.shape[-1])
            return F.cross_entropy(flat, targets.reshape(-1), label_smoothing=smoothing)
        if integer and logits.shape[:-1] == targets.shape:
            flat, labels = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
            total = F.cross_entropy(
                flat, labels, ignore_index=ignore_index, label_smoothing=smoothing, reduction="sum"
            )
            counted = (labels != ignore_index).sum().clamp(min=1)  # none counted: 0, no sync
            return total / counted.to(total.dtype)
        if targets.shape == logits.shape and logits.ndim == 2:
            return F.cross_entropy(logits, targets.to(logits.dtype), label_smoothing=smoothing)
        return fn(namespace, logits, targets)

    return cross_entropy
