"""Lion (Chen et al. 2023; Keras's `Lion`: arguments, defaults and decoupled weight decay)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import Optimizer, decoupled


class Lion(Optimizer):
    """The sign of `beta_1 * m + (1 - beta_1) * g` is the step; `m` then moves with `beta_2`."""

    name: Literal["lion"] = "lion"
    beta_1: float = Field(0.9, gt=0.0, le=1.0)
    beta_2: float = Field(0.99, ge=0.0, lt=1.0)

    slots = ("momentum",)

    def update(self, xp, grad, param, slots, count, lr, weight_decay) -> Any:  # noqa: ANN001
        m = slots["momentum"]
        param = decoupled(param, lr, weight_decay)
        step = xp.sign(self.beta_1 * m + (1.0 - self.beta_1) * grad)
        return param - lr * step, {"momentum": self.beta_2 * m + (1.0 - self.beta_2) * grad}
