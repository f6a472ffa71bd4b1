"""Optimizers, schedules and clipping as `keras.optimizers` objects with crosstrain's math.

Keras's own SGD, Adam and RMSprop differ from the reference (`crosstrain.nn.optim.reference_step`,
PyTorch's rules): Keras's SGD momentum buffer holds `-lr * g` terms, its RMSprop puts epsilon
inside the square root, and its weight decay is decoupled for every optimizer. `SpecOptimizer`
is one `keras.optimizers.Optimizer` subclass that runs any crosstrain optimizer's array-API rule
on the engine's tensors, so it runs on every engine, inside `stateless_apply` on jax, inside a
`tf.function` on tensorflow, and under `LossScaleOptimizer` for float16. On the torch engine
sgd, adam, adamw and rmsprop run as fused `torch._foreach_*` kernels (`optim_torch.py`, a fast
path checked against the rule), as Keras's own torch optimizers do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from crosstrain.nn.optim import checked_schedule, schedule_length
from crosstrain.nn.optimizers import ParamOptions
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
    """Any crosstrain optimizer (its array-API `update`) with global-norm clipping, as one
    `keras.optimizers.Optimizer`.

    Slot variables live in `slots[<canonical slot>][i]`, `i` being the variable's index in the
    list the optimizer was built with (`_get_variable_index`). The rule sees each parameter in
    its canonical shape (`params`: canonical name and shape by variable id); a slot shaped like
    its parameter is kept in the variable's shape, any other in its canonical shape.
    """

    def __init__(
        self,
        spec: Any,
        learning_rate: Any,
        params: dict[int, tuple[str, tuple[int, ...]]] | None = None,
        name: str | None = None,
        overrides: Mapping[str, ParamOptions] | None = None,
    ):
        super().__init__(learning_rate=learning_rate, name=name or f"crosstrain_{spec.name}")
        self.spec = spec
        self.slot_names = spec.slot_names()
        self.slots: dict[str, list[Any]] = {}
        self._params = params or {}
        self.overrides = dict(overrides or {})
        self.param_info: list[tuple[str, tuple[int, ...]]] = []

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        super().build(variables)
        self.lr_scale = self.add_variable(
            shape=(), initializer="ones", dtype="float32", name="lr_scale"
        )
        self.param_info = [self._params.get(id(v), (v.path, tuple(v.shape))) for v in variables]
        self.slots = {s: [] for s in self.slot_names}
        for variable, (_, shape) in zip(variables, self.param_info, strict=True):
            initial = self.spec.init(np, np.zeros(shape, np.float32))
            for slot in self.slot_names:
                value = np.asarray(initial[slot], np.float32)
                if value.shape == shape:
                    value = value.reshape(tuple(variable.shape))
                self.slots[slot].append(
                    self.add_variable(
                        shape=value.shape,
                        initializer=_constant(value),
                        dtype=variable.dtype,
                        name=slot,
                    )
                )

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
        """`spec.update` on the canonical shapes, the results assigned to the variables."""
        spec, dtype = self.spec, variable.dtype
        index = self._get_variable_index(variable)
        name, shape = self.param_info[index]
        param = ops.reshape(ops.convert_to_tensor(variable), shape)
        grad = ops.reshape(ops.cast(gradient, dtype), shape)
        shapes = spec.slot_shapes(shape)
        slot_vars = {s: values[index] for s, values in self.slots.items()}
        slots = {s: ops.reshape(ops.convert_to_tensor(v), shapes[s]) for s, v in slot_vars.items()}
        scale, decay = spec.param_options(name, self.overrides)
        lr = ops.cast(learning_rate, dtype) * scale
        count = ops.cast(self.iterations + 1, "float32")
        new, slots = spec.update(namespace(param), grad, param, slots, count, lr, decay)
        for slot, value in slots.items():
            target = slot_vars[slot]
            self.assign(target, ops.reshape(ops.cast(value, target.dtype), tuple(target.shape)))
        self.assign(variable, ops.reshape(ops.cast(new, dtype), tuple(variable.shape)))

    def _backend_update_step(
        self, grads: list[Any], variables: list[Any], learning_rate: Any
    ) -> None:
        # the multiplier a metric-driven schedule sets (`Program.set_lr_scale`)
        learning_rate = learning_rate * ops.convert_to_tensor(self.lr_scale)
        if keras.backend.backend() != "torch":
            super()._backend_update_step(grads, variables, learning_rate)
            return
        import torch

        from .optim_torch import foreach_update

        with torch.no_grad():
            if not foreach_update(self, grads, variables, learning_rate):
                super()._backend_update_step(grads, variables, learning_rate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["spec"] = self.spec.model_dump()
        return config


def _constant(value: np.ndarray) -> Any:
    def initializer(shape: Any, dtype: Any = None) -> Any:
        return ops.cast(ops.convert_to_tensor(value.reshape(tuple(shape))), dtype or "float32")

    return initializer


def make_optimizer(
    spec: Any,
    schedule: Any,
    total_steps: int | None,
    loss_scaling: bool = False,
    refs: list[Any] | None = None,
    overrides: Mapping[str, ParamOptions] | None = None,
) -> Any:
    """The Keras optimizer for a spec's `optimizer` and `schedule` (wrapped in
    `LossScaleOptimizer` for float16 training); `refs` (the model's `ParamRef`s) name the
    variables and give their canonical shapes; `overrides` are the parameter groups
    (`crosstrain.nn.optimizers.resolve_param_options`), by canonical name."""
    lr: Any = spec.lr
    if schedule is not None:
        lr = SpecSchedule(spec.lr, schedule, total_steps)
    params = {id(r.variable): (r.name, tuple(r.shape)) for r in refs or [] if r.trainable}
    optimizer = SpecOptimizer(spec, lr, params, overrides=overrides)
    if loss_scaling:
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def inner(optimizer: Any) -> SpecOptimizer:
    """The SpecOptimizer inside a LossScaleOptimizer (or the optimizer itself)."""
    return getattr(optimizer, "inner_optimizer", optimizer)
