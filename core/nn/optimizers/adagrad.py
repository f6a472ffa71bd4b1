"""Adagrad and Adadelta (Keras's `Adagrad` and `Adadelta`: arguments, defaults, decoupled
weight decay)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat

from .base import Optimizer, decoupled


class Adagrad(Optimizer):
    """`accumulator += g²` (starting at `initial_accumulator_value`); step `g / √(acc + ε)`."""

    name: Literal["adagrad"] = "adagrad"
    initial_accumulator_value: NonNegativeFloat = Field(
        0.1, description="starting value of the squared-gradient sum"
    )
    epsilon: PositiveFloat = 1e-7

    slots = ("accumulator",)

    def init(self, xp: Any, param: Any) -> dict[str, Any]:
        return {"accumulator": xp.zeros_like(param) + self.initial_accumulator_value}

    def update(self, xp, grad, param, slots, count, lr, weight_decay) -> Any:  # noqa: ANN001
        param = decoupled(param, lr, weight_decay)
        acc = slots["accumulator"] + grad * grad
        return param - lr * grad / xp.sqrt(acc + self.epsilon), {"accumulator": acc}


class Adadelta(Optimizer):
    """Running means of squared gradients and squared steps; the step is their RMS ratio × g."""

    name: Literal["adadelta"] = "adadelta"
    rho: float = Field(0.95, ge=0.0, lt=1.0)
    epsilon: PositiveFloat = 1e-7

    slots = ("accumulated_grad", "accumulated_delta_var")

    def update(self, xp, grad, param, slots, count, lr, weight_decay) -> Any:  # noqa: ANN001
        rho, eps = self.rho, self.epsilon
        param = decoupled(param, lr, weight_decay)
        acc_grad = rho * slots["accumulated_grad"] + (1.0 - rho) * grad * grad
        delta = -xp.sqrt(slots["accumulated_delta_var"] + eps) * grad / xp.sqrt(acc_grad + eps)
        acc_delta = rho * slots["accumulated_delta_var"] + (1.0 - rho) * delta * delta
        new = {"accumulated_grad": acc_grad, "accumulated_delta_var": acc_delta}
        return param + lr * delta, new
