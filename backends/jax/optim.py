"""The spec's optimizer, schedule and clipping as one optax chain that matches `reference_step`.

The chain is `[clip] [L2 decay] core [decoupled decay] scale(-lr * schedule(count))`:

- clipping scales by `min(1, max_norm / (norm + 1e-6))`, exactly as the reference (optax's
  `clip_by_global_norm` has no `1e-6`);
- sgd, adam and rmsprop add `weight_decay * param` to the gradient before anything else
  (torch's L2); adamw adds it to the Adam direction, which is torch's decoupled
  `param * (1 - lr * weight_decay)` written as one update;
- momentum is torch's trace `buf = momentum * buf + g` (`optax.trace`, nesterov included);
- rmsprop keeps eps outside the square root and no bias correction.

Canonical slots: `ScaleByAdamState.mu/nu` → `m`/`v`, `TraceState.trace` → `momentum`,
`ScaleByRmsState.nu` → `rms`; every count in the chain equals the canonical `step`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from crosstrain.nn.optim import checked_schedule


def schedule_factor(schedule: Any, total_steps: int | None) -> Callable[[jax.Array], jax.Array]:
    """`schedule.factor_xp` (core's one definition) on `jax.numpy`, traceable inside the jitted
    step; 1.0 when there is no schedule. `total_steps` None means `DEFAULT_TOTAL_STEPS`."""
    schedule = checked_schedule(schedule)
    if schedule is None:
        return lambda count: jnp.ones((), jnp.float32)
    return lambda count: schedule.factor_xp(jnp, jnp.asarray(count, jnp.int32), total_steps)


def clip_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Scales every update by `min(1, max_norm / (global_norm + 1e-6))`, as `reference_step`."""

    def update(
        updates: Any, state: optax.EmptyState, params: Any = None
    ) -> tuple[Any, optax.EmptyState]:
        norm = optax.tree.norm(updates)
        scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
        return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(
    opt: Any, schedule: Any, total_steps: int | None
) -> optax.GradientTransformation:
    """The optax chain for an optimizer spec and an optional schedule spec."""
    parts: list[optax.GradientTransformation] = []
    if opt.clip_norm is not None:
        parts.append(clip_global_norm(opt.clip_norm))
    if opt.weight_decay and opt.name != "adamw":
        parts.append(optax.add_decayed_weights(opt.weight_decay))
    if opt.name == "sgd":
        if opt.momentum:
            parts.append(optax.trace(decay=opt.momentum, nesterov=opt.nesterov))
    elif opt.name in ("adam", "adamw"):
        parts.append(optax.scale_by_adam(b1=opt.beta_1, b2=opt.beta_2, eps=opt.epsilon))
        if opt.name == "adamw" and opt.weight_decay:
            parts.append(optax.add_decayed_weights(opt.weight_decay))
    elif opt.name == "rmsprop":
        parts.append(
            optax.scale_by_rms(decay=opt.rho, eps=opt.epsilon, initial_scale=0.0, eps_in_sqrt=False)
        )
        if opt.momentum:
            parts.append(optax.trace(decay=opt.momentum))
    else:
        raise ValueError(f"unknown optimizer {opt.name!r}")
    factor = schedule_factor(schedule, total_steps)
    parts.append(optax.scale_by_schedule(lambda count: -opt.lr * factor(count)))
    return optax.chain(*parts)


def _slot_fields(state: Any) -> dict[str, str]:
    """Canonical slot → field of one optax state in the chain."""
    if isinstance(state, optax.ScaleByAdamState):
        return {"m": "mu", "v": "nu"}
    if isinstance(state, optax.ScaleByRmsState):
        return {"rms": "nu"}
    if isinstance(state, optax.TraceState):
        return {"momentum": "trace"}
    return {}


def get_slots(opt_state: tuple[Any, ...]) -> dict[str, dict[str, Any]]:
    """Canonical slot → parameter name → array, from the chain's state."""
    slots: dict[str, dict[str, Any]] = {}
    for state in opt_state:
        for slot, attr in _slot_fields(state).items():
            slots[slot] = dict(getattr(state, attr))
    return slots


def with_slots(
    opt_state: tuple[Any, ...], slots: dict[str, dict[str, Any]], step: int
) -> tuple[Any, ...]:
    """The chain's state with the given slots (missing entries keep their value) and counts set to `step`."""
    result = []
    for state in opt_state:
        changes = {}
        for slot, attr in _slot_fields(state).items():
            current = dict(getattr(state, attr))
            current.update({k: v for k, v in slots.get(slot, {}).items() if k in current})
            changes[attr] = current
        if "count" in getattr(state, "_fields", ()):
            changes["count"] = jnp.asarray(step, jnp.int32)
        result.append(state._replace(**changes) if changes else state)
    return tuple(result)
