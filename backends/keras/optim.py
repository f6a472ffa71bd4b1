"""Optimizers, schedules and clipping as `keras.optimizers` objects with crosstrain's math.

Keras's own SGD, Adam and RMSprop differ from the reference (`crosstrain.nn.optim.reference_step`,
PyTorch's rules): Keras's SGD momentum buffer holds `-lr * g` terms, its RMSprop puts epsilon
inside the square root, and its weight decay is decoupled for every optimizer. `SpecOptimizer`
is one `keras.optimizers.Optimizer` subclass that implements the reference rules in
`keras.ops`, so it runs on every engine, inside `stateless_apply` on jax, inside a
`tf.function` on tensorflow, and under `LossScaleOptimizer` for float16. On the torch engine
the same rules run as fused `torch._foreach_*` kernels (`optim_torch.py`), as Keras's own torch
optimizers do.
"""

from __future__ import annotations

from typing import Any

import keras
from crosstrain.nn.optim import checked_schedule, schedule_length, slot_names
from keras import ops

from .xp import namespace


class SpecSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`lr × schedule.factor_xp(step, total_steps)`: core's one definition, evaluated in-graph
    from the optimizer's step with the engine's array namespace."""

    def __init__(self, lr: float, schedule: Any, total_steps: int | None):
        self.lr, self.schedule = float(lr), checked_schedule(schedule)
        self.total_steps = schedule_length(total_steps)

    def __call__(self, step: Any) -> Any:
        step = ops.convert_to_tensor(step)
        return self.lr * self.schedule.factor_xp(namespace(step), step, self.total_steps)

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "schedule": self.schedule.model_dump(),
            "total_steps": self.total_steps,
        }


class SpecOptimizer(keras.optimizers.Optimizer):
    """sgd, adam, adamw or rmsprop with the reference update rules and global-norm clipping.

    Slot variables live in `slots[<canonical slot>][i]`, `i` being the variable's index in the
    list the optimizer was built with (`_get_variable_index`).
    """

    def __init__(self, spec: Any, learning_rate: Any, name: str | None = None):
        super().__init__(learning_rate=learning_rate, name=name or f"crosstrain_{spec.name}")
        self.spec = spec
        self.slot_names = slot_names(spec)
        self.slots: dict[str, list[Any]] = {}

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        super().build(variables)
        self.slots = {
            s: [self.add_variable_from_reference(v, name=s) for v in variables]
            for s in self.slot_names
        }

    def _clip_gradients(self, grads: list[Any]) -> list[Any]:
        """`scale = min(1, clip_norm / (norm + 1e-6))` over all gradients, as the reference."""
        if self.spec.clip_norm is None:
            return grads
        present = [g for g in grads if g is not None]
        norm = ops.sqrt(
            ops.sum(ops.stack([ops.sum(ops.square(ops.cast(g, "float32"))) for g in present]))
        )
        scale = ops.minimum(1.0, self.spec.clip_norm / (norm + 1e-6))
        return [None if g is None else g * ops.cast(scale, g.dtype) for g in grads]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        o, dtype = self.spec, variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        slot = {name: values[index] for name, values in self.slots.items()}
        if o.name != "adamw" and o.weight_decay:
            g = g + o.weight_decay * variable
        if o.name == "sgd":
            if o.momentum:
                buf = o.momentum * slot["momentum"] + g
                self.assign(slot["momentum"], buf)
                g = g + o.momentum * buf if o.nesterov else buf
            self.assign_sub(variable, lr * g)
        elif o.name in ("adam", "adamw"):
            t = ops.cast(self.iterations + 1, dtype)
            m = o.beta_1 * slot["m"] + (1.0 - o.beta_1) * g
            v = o.beta_2 * slot["v"] + (1.0 - o.beta_2) * g * g
            self.assign(slot["m"], m)
            self.assign(slot["v"], v)
            m_hat = m / (1.0 - ops.power(ops.cast(o.beta_1, dtype), t))
            v_hat = v / (1.0 - ops.power(ops.cast(o.beta_2, dtype), t))
            p = variable * (1.0 - lr * o.weight_decay) if o.name == "adamw" else variable
            self.assign(variable, p - lr * m_hat / (ops.sqrt(v_hat) + o.epsilon))
        else:
            rms = o.rho * slot["rms"] + (1.0 - o.rho) * g * g
            self.assign(slot["rms"], rms)
            update = g / (ops.sqrt(rms) + o.epsilon)
            if o.momentum:
                update = o.momentum * slot["momentum"] + update
                self.assign(slot["momentum"], update)
            self.assign_sub(variable, lr * update)

    def _backend_update_step(
        self, grads: list[Any], variables: list[Any], learning_rate: Any
    ) -> None:
        if keras.backend.backend() != "torch":
            super()._backend_update_step(grads, variables, learning_rate)
            return
        import torch

        from .optim_torch import foreach_update

        with torch.no_grad():
            foreach_update(self, grads, variables, learning_rate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["spec"] = self.spec.model_dump()
        return config


def make_optimizer(
    spec: Any, schedule: Any, total_steps: int | None, loss_scaling: bool = False
) -> Any:
    """The Keras optimizer for a spec's `optimizer` and `schedule` (wrapped in
    `LossScaleOptimizer` for float16 training)."""
    lr: Any = spec.lr
    if schedule is not None:
        lr = SpecSchedule(spec.lr, schedule, total_steps)
    optimizer = SpecOptimizer(spec, lr)
    if loss_scaling:
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def inner(optimizer: Any) -> SpecOptimizer:
    """The SpecOptimizer inside a LossScaleOptimizer (or the optimizer itself)."""
    return getattr(optimizer, "inner_optimizer", optimizer)
