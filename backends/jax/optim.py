"""The spec's optimizer, schedule and clipping inside the jitted step: core's one rule.

`JaxOptimizer.update` clips the gradients (`min(1, max_norm / (norm + 1e-6))`, as
`reference_step`; optax's `clip_by_global_norm` has no `1e-6`), evaluates the schedule's
`factor_xp` on `jax.numpy` and runs the optimizer's array-API `update` over the parameter dict
(`crosstrain.nn.optimizers.update_tree`); XLA fuses the per-parameter rules into a few
kernels, so no optax chain is needed. The optimizer state is the canonical slots themselves,
`{"slots": {slot: {param: array}}, "lr_scale": float32}` (the multiplier a metric-driven
schedule sets, `Program.set_lr_scale`), and the update count is the carry's `step`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from crosstrain.nn.optim import checked_schedule
from crosstrain.nn.optimizers import Optimizer, ParamOptions, update_tree


def schedule_factor(schedule: Any, total_steps: int | None) -> Callable[[jax.Array], jax.Array]:
    """`schedule.factor_xp` (core's one definition) on `jax.numpy`, traceable inside the jitted
    step; 1.0 when there is no schedule. `total_steps` None means `DEFAULT_TOTAL_STEPS`."""
    schedule = checked_schedule(schedule)
    if schedule is None:
        return lambda count: jnp.ones((), jnp.float32)
    return lambda count: schedule.factor_xp(jnp, jnp.asarray(count, jnp.int32), total_steps)


def clip_global_norm(grads: Any, max_norm: float) -> Any:
    """Every gradient scaled by `min(1, max_norm / (global_norm + 1e-6))`, as `reference_step`."""
    norm = optax.tree.norm(grads)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads)


class JaxOptimizer:
    """An optimizer spec, its schedule and clipping as pure functions of the carry.

    Args:
        opt: the spec's optimizer.
        schedule: the spec's schedule (None: constant).
        total_steps: updates in the run (None: core's default length).
        overrides: per-parameter lr multiplier / weight decay (parameter groups).
    """

    def __init__(
        self,
        opt: Optimizer,
        schedule: Any,
        total_steps: int | None,
        overrides: Mapping[str, ParamOptions] | None = None,
    ):
        self.opt, self.overrides = opt, overrides
        self.factor = schedule_factor(schedule, total_steps)

    def init(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The state before the first update, on the host (numpy)."""
        slots: dict[str, dict[str, Any]] = {s: {} for s in self.opt.slot_names()}
        for name, param in params.items():
            for slot, value in self.opt.init(np, np.asarray(param)).items():
                slots[slot][name] = value
        return {"slots": slots, "lr_scale": np.float32(1.0)}

    def update(
        self, grads: dict[str, Any], state: dict[str, Any], params: dict[str, Any], step: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """New parameters and state after the update that follows `step` updates (traced)."""
        opt = self.opt
        if opt.clip_norm is not None:
            grads = clip_global_norm(grads, opt.clip_norm)
        lr = opt.lr * self.factor(step) * state["lr_scale"]
        count = jnp.asarray(step, jnp.float32) + 1.0
        new_params, slots = update_tree(
            opt, jnp, params, grads, state["slots"], count, lr, self.overrides
        )
        return new_params, {"slots": slots, "lr_scale": state["lr_scale"]}


def make_optimizer(
    opt: Any,
    schedule: Any,
    total_steps: int | None,
    overrides: Mapping[str, ParamOptions] | None = None,
) -> JaxOptimizer:
    """The jitted-step optimizer for an optimizer spec and an optional schedule spec
    (`overrides`: the parameter groups, `crosstrain.nn.optimizers.resolve_param_options`)."""
    return JaxOptimizer(opt, schedule, total_steps, overrides)


def get_slots(opt_state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Canonical slot → parameter name → array, from the optimizer state."""
    return {slot: dict(values) for slot, values in opt_state["slots"].items()}


def with_slots(opt_state: dict[str, Any], slots: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The state with the given slots (missing entries keep their value)."""
    current = get_slots(opt_state)
    for slot, values in current.items():
        values.update({k: v for k, v in slots.get(slot, {}).items() if k in values})
    return {**opt_state, "slots": current}
