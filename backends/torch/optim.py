"""The spec's optimizer, schedule and clipping on torch, matching `crosstrain.nn.optim.reference_step`.

Every optimizer runs as `RuleOptimizer`: core's array-API rule (`Optimizer.update`) on the
parameters' canonical views (a Dense kernel's `(in, out)`, see `state.py`) under `no_grad`,
its slots kept under their canonical names in the canonical layout. sgd, adam, adamw and
rmsprop have a native fast path (`NATIVE`): `torch.optim`'s fused kernels on CUDA, foreach
elsewhere, whose rules are the reference's (tests/backends/test_torch_optim.py checks both
paths against `reference_step`); it is used when the optimizer is exactly that class and no
parameter has its own options. `SlotLayout` says where a path keeps each slot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import array_api_compat
import torch
from crosstrain.nn.optim import checked_schedule, schedule_length
from crosstrain.nn.optimizers import SGD, Adam, AdamW, Optimizer, ParamOptions, RMSprop

from .model import ParamRef
from .state import canonical_view

NATIVE_FAST_PATHS = True
"""Use `torch.optim` for the optimizers of `NATIVE` (False: always `RuleOptimizer`)."""


@dataclass(frozen=True)
class SlotLayout:
    """Where an optimizer keeps the canonical slots in `optimizer.state[param]`.

    Attributes:
        keys: canonical slot → key in the per-parameter state.
        canonical: the slot tensors are in the canonical layout (`RuleOptimizer`), else in the
            parameter's torch layout and shape (`torch.optim`).
        counts_steps: the state keeps a per-parameter `step`.
    """

    keys: Mapping[str, str]
    canonical: bool
    counts_steps: bool


class RuleOptimizer(torch.optim.Optimizer):
    """Any crosstrain optimizer: its `update` on torch tensors, one parameter at a time.

    Args:
        spec: the optimizer.
        refs: the trainable parameters (each tensor once), for their names and layouts.
        overrides: per-parameter lr multiplier / weight decay, by canonical name.
    """

    def __init__(
        self,
        spec: Optimizer,
        refs: list[ParamRef],
        overrides: Mapping[str, ParamOptions] | None = None,
    ):
        super().__init__([ref.tensor for ref in refs], {"lr": spec.lr})
        self.spec, self.overrides = spec, overrides
        self._refs = {id(ref.tensor): ref for ref in refs}
        self.layout = SlotLayout({s: s for s in spec.slot_names()}, True, True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        spec = self.spec
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                ref = self._refs[id(param)]
                view = canonical_view(param, ref.layout)
                grad = canonical_view(param.grad, ref.layout).to(param.dtype)
                xp = array_api_compat.array_namespace(view)
                state = self.state[param]
                if not state:
                    state.update(spec.init(xp, view))
                    state["step"] = torch.zeros((), dtype=torch.float32)
                count = state["step"] + 1.0
                scale, decay = spec.param_options(ref.name, self.overrides)
                slots = {s: state[s] for s in spec.slot_names()}
                new, slots = spec.update(xp, grad, view, slots, count, group["lr"] * scale, decay)
                view.copy_(new)
                for slot, value in slots.items():
                    state[slot] = value.to(state[slot].dtype)
                state["step"] = count
        return loss


def _kernels(name: str, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"fused": True} if name != "rmsprop" else {"foreach": True}
    if device.type == "cpu":
        return {"foreach": True}
    return {}


def _sgd(spec: Any, params: list[torch.Tensor], kernels: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov and spec.momentum > 0,
        weight_decay=spec.weight_decay,
        **kernels,
    )


def _adam(spec: Any, params: list[torch.Tensor], kernels: dict[str, Any]) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if isinstance(spec, AdamW) else torch.optim.Adam
    return kind(
        params,
        lr=spec.lr,
        betas=(spec.beta_1, spec.beta_2),
        eps=spec.epsilon,
        weight_decay=spec.weight_decay,
        **kernels,
    )


def _rmsprop(
    spec: Any, params: list[torch.Tensor], kernels: dict[str, Any]
) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        params,
        lr=spec.lr,
        alpha=spec.rho,
        eps=spec.epsilon,
        weight_decay=spec.weight_decay,
        momentum=spec.momentum,
        **kernels,
    )


_ADAM_KEYS = {"m": "exp_avg", "v": "exp_avg_sq"}
NATIVE: dict[type[Optimizer], tuple[Callable[..., torch.optim.Optimizer], SlotLayout]] = {
    SGD: (_sgd, SlotLayout({"momentum": "momentum_buffer"}, False, False)),
    Adam: (_adam, SlotLayout(_ADAM_KEYS, False, True)),
    AdamW: (_adam, SlotLayout(_ADAM_KEYS, False, True)),
    RMSprop: (
        _rmsprop,
        SlotLayout({"rms": "square_avg", "momentum": "momentum_buffer"}, False, True),
    ),
}
"""Optional accelerations: optimizer class → (`torch.optim` factory, where it keeps the slots)."""


def make_optimizer(
    spec: Optimizer,
    refs: list[ParamRef],
    device: torch.device,
    overrides: Mapping[str, ParamOptions] | None = None,
) -> tuple[torch.optim.Optimizer, SlotLayout]:
    """The torch optimizer for `spec` over the trainable `refs` and where it keeps the slots.

    Args:
        spec: `optimizer:` of the spec.
        refs: trainable parameters, each tensor once.
        device: where they live; picks fused (CUDA) or foreach kernels of the native path.
        overrides: per-parameter options (`resolve_param_options`): torch parameter groups on
            the native path, per-parameter on the rule path.
    """
    native = NATIVE.get(type(spec)) if NATIVE_FAST_PATHS else None
    if native is None:
        optimizer = RuleOptimizer(spec, refs, overrides)
        return optimizer, optimizer.layout
    factory, layout = native
    params: Any = [ref.tensor for ref in refs]
    if overrides:
        params = torch_param_groups(spec, refs, overrides)
    return factory(spec, params, _kernels(spec.name, device)), layout


def torch_param_groups(
    spec: Optimizer, refs: list[ParamRef], overrides: Mapping[str, ParamOptions]
) -> list[dict[str, Any]]:
    """`torch.optim` parameter groups, one per distinct `(lr_scale, weight_decay)`, in the
    parameters' order; each group keeps its `lr_scale` for `LrSchedule`."""
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for ref in refs:
        scale, decay = spec.param_options(ref.name, overrides)
        group = groups.get((scale, decay))
        if group is None:
            group = groups[(scale, decay)] = {
                "params": [],
                "lr": spec.lr * scale,
                "lr_scale": scale,
                "weight_decay": decay,
            }
        group["params"].append(ref.tensor)
    return list(groups.values())


class LrSchedule:
    """Sets each update's learning rate from the spec's schedule, on the host (no sync): core's
    one definition (`schedule.factor`, the array-API `factor_xp` on Python floats).

    Args:
        optimizer: the torch optimizer whose groups get the rate.
        base_lr: the optimizer's `lr`.
        schedule: `spec.schedule` (None: constant rate).
        total_steps: updates in the whole run (`RunEnv.total_steps`; None: core's default).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        schedule: Any,
        total_steps: int | None,
    ):
        self.optimizer, self.base_lr, self.scale = optimizer, base_lr, 1.0
        self.schedule = checked_schedule(schedule)
        self.total_steps = schedule_length(total_steps)

    def lr(self, step: int) -> float:
        """The rate of the update after `step` updates (times `scale`, a metric-driven
        multiplier: `Program.set_lr_scale`)."""
        if self.schedule is None:
            return self.base_lr * self.scale
        return self.base_lr * self.scale * self.schedule.factor(step, self.total_steps)

    def apply(self, step: int) -> None:
        """Writes the rate for the update after `step` updates into every parameter group."""
        if self.schedule is None and self.scale == 1.0:
            return
        lr = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


def clip_gradients(
    params: list[torch.Tensor], max_norm: float | None, device: torch.device, measure: bool = False
) -> torch.Tensor | None:
    """Scales all gradients so their global norm is at most `max_norm` (no-op for None).

    Returns the global L2 norm before clipping as a 0-d device tensor (no sync) when it was
    computed: always when clipping, and when `measure` asks for it (the `grad_norm` callback).
    """
    foreach = True if device.type in ("cuda", "cpu") else None
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=foreach)
    if not measure:
        return None
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=device)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total_norm is not None:
        return total_norm(grads, foreach=foreach)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
