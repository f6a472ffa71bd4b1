"""RMSprop (PyTorch's rule: epsilon outside the square root, no centering, L2 decay)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveFloat

from .base import Optimizer, l2


class RMSprop(Optimizer):
    """`rms`: the running mean of squared gradients; `momentum` (when > 0) of the steps."""

    name: Literal["rmsprop"] = "rmsprop"
    rho: float = Field(0.9, ge=0.0, lt=1.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    epsilon: PositiveFloat = 1e-8

    slots = ("rms", "momentum")

    def slot_names(self) -> tuple[str, ...]:
        return self.slots if self.momentum else ("rms",)

    def update(self, xp, grad, param, slots, count, lr, weight_decay) -> Any:  # noqa: ANN001
        g = l2(grad, param, weight_decay)
        rms = self.rho * slots["rms"] + (1.0 - self.rho) * g * g
        step = g / (xp.sqrt(rms) + self.epsilon)
        new = {"rms": rms}
        if self.momentum:
            step = new["momentum"] = self.momentum * slots["momentum"] + step
        return param - lr * step, new
