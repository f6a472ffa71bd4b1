"""Adam (L2 `weight_decay`, PyTorch's Adam) and AdamW (decoupled decay), bias-corrected."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat

from .base import Optimizer, decoupled, l2


class Adam(Optimizer):
    """`m`, `v`: the bias-corrected first and second moments of the gradient."""

    name: Literal["adam"] = "adam"
    beta_1: float = Field(0.9, ge=0.0, lt=1.0)
    beta_2: float = Field(0.999, ge=0.0, lt=1.0)
    epsilon: PositiveFloat = 1e-8

    slots = ("m", "v")
    decoupled_decay: ClassVar[bool] = False

    def update(self, xp, grad, param, slots, count, lr, weight_decay) -> Any:  # noqa: ANN001
        b1, b2 = self.beta_1, self.beta_2
        if self.decoupled_decay:
            g, param = grad, decoupled(param, lr, weight_decay)
        else:
            g = l2(grad, param, weight_decay)
        m = b1 * slots["m"] + (1.0 - b1) * g
        v = b2 * slots["v"] + (1.0 - b2) * g * g
        m_hat = m / (1.0 - b1**count)
        v_hat = v / (1.0 - b2**count)
        return param - lr * m_hat / (xp.sqrt(v_hat) + self.epsilon), {"m": m, "v": v}


class AdamW(Adam):
    """Adam with decoupled weight decay: `param *= 1 - lr * weight_decay` before the step."""

    name: Literal["adamw"] = "adamw"  # type: ignore[assignment]
    weight_decay: NonNegativeFloat = 1e-2
    decoupled_decay = True
