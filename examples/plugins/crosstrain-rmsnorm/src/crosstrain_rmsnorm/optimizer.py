"""`ExampleSignum`: a third-party optimizer in one file (signSGD with momentum, Bernstein et
al. 2018), trained by every backend with no framework code.

The class declares its options (pydantic fields), its per-parameter slots (`slots`) and one
update rule against the array API (`xp` is numpy for the reference, torch, jax.numpy or the
Keras engine's namespace inside each backend's compiled step). The slots are the checkpoint's
canonical optimizer state, so a run moves between backends. A spec names it
`optimizer: {name: example_signum}` once the plugin is installed (the hook below), or
`optimizer: {name: "crosstrain_rmsnorm.optimizer:ExampleSignum"}` without it.
"""

from __future__ import annotations

from typing import Any, Literal

from crosstrain import hookimpl
from crosstrain.nn.optimizers import Optimizer, decoupled
from pydantic import Field


class ExampleSignum(Optimizer):
    """`m = beta * m + (1 - beta) * g`; the step is `lr * sign(m)` (decoupled weight decay)."""

    name: Literal["example_signum"] = "example_signum"
    lr: float = Field(1e-3, gt=0.0)
    beta: float = Field(0.9, ge=0.0, lt=1.0, description="decay of the gradient average")

    slots = ("momentum",)

    def update(self, xp, grad, param, slots, count, lr, weight_decay) -> Any:  # noqa: ANN001
        m = self.beta * slots["momentum"] + (1.0 - self.beta) * grad
        return decoupled(param, lr, weight_decay) - lr * xp.sign(m), {"momentum": m}


@hookimpl
def crosstrain_add_optimizers(registry: Any) -> None:
    registry.optimizers.add(ExampleSignum)
