"""Learning-rate schedules, and the optimizers of `crosstrain.nn.optimizers` under their
former module name.

Each optimizer is written once there (its options, slots and array-API rule); every backend
must reproduce `reference_step`, the numpy run of that rule. Option names follow Keras
(`beta_1`, `epsilon`, `rho`); the rules of sgd, adam, adamw and rmsprop are PyTorch's (L2
`weight_decay` except adamw's decoupled decay; momentum buffers accumulate gradients).

Example:
    >>> Adam(lr=3e-4).name
    'adam'
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from crosstrain.nn.optimizers import (  # noqa: F401 (re-exported)
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    AdamW,
    AnyOptimizer,
    Lion,
    Optimizer,
    ParamOptions,
    RMSprop,
    clip_by_global_norm,
    reference_step,
    slot_names,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)

_Optimizer = Optimizer  # the base class under its former name

DEFAULT_TOTAL_STEPS = 1_000_000
"""Run length a schedule assumes when nobody says how many updates the run takes (`build`
without `total_steps`); `fit` always passes the run's own length (`crosstrain.train.run_length`)."""


def schedule_length(total_steps: int | None) -> int:
    """The run length schedules use: `total_steps`, or `DEFAULT_TOTAL_STEPS` when unknown."""
    return int(total_steps) if total_steps else DEFAULT_TOTAL_STEPS


class HostScalars:
    """The few array API functions a schedule uses, on Python floats: the host evaluates the
    same `factor_xp` as the compiled steps, at the cost of a few float operations."""

    __name__ = "crosstrain.nn.optim.HostScalars"
    float32 = float

    @staticmethod
    def astype(x: Any, dtype: Any) -> float:
        return float(x)

    @staticmethod
    def ones_like(x: Any) -> float:
        return 1.0

    @staticmethod
    def zeros_like(x: Any) -> float:
        return 0.0

    @staticmethod
    def where(condition: Any, a: Any, b: Any) -> float:
        return a if condition else b

    minimum, maximum = staticmethod(min), staticmethod(max)
    cos, floor, exp = staticmethod(math.cos), staticmethod(math.floor), staticmethod(math.exp)


HOST = HostScalars()


class _Schedule(BaseModel):
    """A learning-rate schedule: `lr × factor(step, total_steps)`.

    The math is written once, `factor_xp`, against the array API: the torch backend evaluates
    it on the host (`factor`, Python floats), jax inside its jitted optax chain (`jax.numpy`),
    Keras inside its compiled step (the engine's namespace). A subclass defines
    `_after_warmup`; there is no silent default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    warmup_steps: NonNegativeInt = 0

    def factor(self, step: int, total_steps: int | None) -> float:
        """Multiplier of the base lr for the update after `step` updates (0-based), on the host."""
        return float(self.factor_xp(HOST, step, total_steps))

    def factor_xp(self, xp: Any, step: Any, total_steps: int | None) -> Any:
        """`factor` for `step`, an integer array of namespace `xp` (or a Python int with
        `HOST`), as a float32 array of that namespace: traceable, no host sync."""
        t = xp.astype(step, xp.float32)
        warmup = self.warmup_steps
        steps = max(schedule_length(total_steps) - warmup, 1)
        if not warmup:
            return self._after_warmup(xp, t, steps)
        after = self._after_warmup(xp, xp.maximum(t - warmup, xp.zeros_like(t)), steps)
        return xp.where(t < warmup, (t + 1.0) / warmup, after)

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        """The factor `t` (float array) updates after the warmup, over `steps` such updates."""
        raise NotImplementedError(f"schedule {type(self).__name__} defines no factor")


class Constant(_Schedule):
    """The base lr (after an optional linear warmup)."""

    name: Literal["constant"] = "constant"

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        return xp.ones_like(t)


class LinearWarmup(Constant):
    """Alias of `constant` that reads well: `{name: linear_warmup, warmup_steps: 100}`."""

    name: Literal["linear_warmup"] = "linear_warmup"  # type: ignore[assignment]


class StepDecay(_Schedule):
    """Multiply the lr by `gamma` every `step_size` updates."""

    name: Literal["step"] = "step"
    step_size: PositiveInt = 1000
    gamma: PositiveFloat = 0.1

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        return self.gamma ** xp.floor(t / self.step_size)


class Cosine(_Schedule):
    """Cosine decay to `min_ratio` × lr over `decay_steps` (default: the whole run)."""

    name: Literal["cosine"] = "cosine"
    decay_steps: PositiveInt | None = None
    min_ratio: float = Field(0.0, ge=0.0, le=1.0)

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        progress = xp.minimum(t / (self.decay_steps or steps), xp.ones_like(t))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + xp.cos(math.pi * progress))


class LinearDecay(_Schedule):
    """Linear decay to `end_ratio` × lr over the run."""

    name: Literal["linear"] = "linear"
    end_ratio: float = Field(0.0, ge=0.0, le=1.0)

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        return 1.0 + (self.end_ratio - 1.0) * xp.minimum(t / steps, xp.ones_like(t))


class Exponential(_Schedule):
    """Exponential change from lr to `end_ratio` × lr at the run's last update (> 1 grows:
    `crosstrain lr-find` sweeps the lr with it)."""

    name: Literal["exponential"] = "exponential"
    end_ratio: PositiveFloat = 0.01

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        progress = xp.minimum(t / max(steps - 1, 1), xp.ones_like(t))
        return xp.exp(math.log(self.end_ratio) * progress)


ScheduleSpec = Annotated[
    Constant | LinearWarmup | StepDecay | Cosine | LinearDecay | Exponential,
    Field(discriminator="name"),
]


def applied_lr(
    opt: _Optimizer, schedule: _Schedule | None, step: int, total_steps: int | None
) -> float:
    """The learning rate of the update after `step` updates (0-based): `opt.lr` times the
    schedule's factor (warmup included), as every backend applies it."""
    return opt.lr if schedule is None else opt.lr * schedule.factor(step, total_steps)


def checked_schedule(schedule: Any) -> _Schedule | None:
    """`schedule` checked for backends: None or a schedule that defines its factor; anything
    else (a dict, a foreign object) is a SpecError, never a silent factor of 1."""
    if schedule is None or isinstance(schedule, _Schedule):
        return schedule
    from crosstrain.errors import SpecError, SpecIssue

    raise SpecError(SpecIssue("schedule", f"not a crosstrain schedule: {type(schedule).__name__}"))
