"""SGD with momentum and Nesterov momentum (PyTorch's rule: the buffer accumulates gradients;
L2 `weight_decay` added to the gradient)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveFloat

from .base import Optimizer, l2


class SGD(Optimizer):
    """`buf = momentum * buf + g`; the step is `buf` (or `g + momentum * buf` with Nesterov)."""

    name: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 1e-2
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False

    slots = ("momentum",)

    def slot_names(self) -> tuple[str, ...]:
        return self.slots if self.momentum else ()

    def update(self, xp, grad, param, slots, count, lr, weight_decay) -> Any:  # noqa: ANN001
        g = l2(grad, param, weight_decay)
        if not self.momentum:
            return param - lr * g, {}
        buf = self.momentum * slots["momentum"] + g
        step = g + self.momentum * buf if self.nesterov else buf
        return param - lr * step, {"momentum": buf}
