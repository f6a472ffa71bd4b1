"""The spec's optimizer, schedule and clipping on torch, matching `crosstrain.nn.optim.reference_step`.

torch's update rules are the reference's: L2 `weight_decay` added to the gradient for sgd,
adam and rmsprop, decoupled decay for adamw, momentum buffers that accumulate gradients, and
rmsprop's epsilon outside the square root. Fused kernels are used on CUDA, foreach elsewhere
where torch has them (torch picks the slow per-tensor loop on CPU unless asked).
"""

from __future__ import annotations

from typing import Any

import torch
from crosstrain.nn.optim import _Optimizer, checked_schedule, schedule_length

_FUSED = ("sgd", "adam", "adamw")


def _kernels(name: str, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"fused": True} if name in _FUSED else {"foreach": True}
    if device.type == "cpu":
        return {"foreach": True}
    return {}


def make_optimizer(
    spec: _Optimizer, params: list[torch.Tensor], device: torch.device
) -> torch.optim.Optimizer:
    """The torch optimizer for `spec` over `params` (one parameter group).

    Args:
        spec: `optimizer:` of the spec (sgd, adam, adamw or rmsprop).
        params: trainable tensors, each once.
        device: where they live; picks fused (CUDA) or default kernels.
    """
    kernels = _kernels(spec.name, device)
    if spec.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=spec.lr,
            momentum=spec.momentum,
            nesterov=spec.nesterov and spec.momentum > 0,
            weight_decay=spec.weight_decay,
            **kernels,
        )
    if spec.name in ("adam", "adamw"):
        kind = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
        return kind(
            params,
            lr=spec.lr,
            betas=(spec.beta_1, spec.beta_2),
            eps=spec.epsilon,
            weight_decay=spec.weight_decay,
            **kernels,
        )
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=spec.lr,
            alpha=spec.rho,
            eps=spec.epsilon,
            weight_decay=spec.weight_decay,
            momentum=spec.momentum,
            **kernels,
        )
    raise ValueError(f"unknown optimizer {spec.name!r}")


class LrSchedule:
    """Sets each update's learning rate from the spec's schedule, on the host (no sync): core's
    one definition (`schedule.factor`, the array-API `factor_xp` on Python floats).

    Args:
        optimizer: the torch optimizer whose groups get the rate.
        base_lr: the optimizer's `lr`.
        schedule: `spec.schedule` (None: constant rate).
        total_steps: updates in the whole run (`RunEnv.total_steps`; None: core's default).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        schedule: Any,
        total_steps: int | None,
    ):
        self.optimizer, self.base_lr = optimizer, base_lr
        self.schedule = checked_schedule(schedule)
        self.total_steps = schedule_length(total_steps)

    def lr(self, step: int) -> float:
        """The rate of the update after `step` updates."""
        if self.schedule is None:
            return self.base_lr
        return self.base_lr * self.schedule.factor(step, self.total_steps)

    def apply(self, step: int) -> None:
        """Writes the rate for the update after `step` updates into every parameter group."""
        if self.schedule is None:
            return
        lr = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def clip_gradients(
    params: list[torch.Tensor], max_norm: float | None, device: torch.device, measure: bool = False
) -> torch.Tensor | None:
    """Scales all gradients so their global norm is at most `max_norm` (no-op for None).

    Returns the global L2 norm before clipping as a 0-d device tensor (no sync) when it was
    computed: always when clipping, and when `measure` asks for it (the `grad_norm` callback).
    """
    foreach = True if device.type in ("cuda", "cpu") else None
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=foreach)
    if not measure:
        return None
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=device)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total_norm is not None:
        return total_norm(grads, foreach=foreach)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
