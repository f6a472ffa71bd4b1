"""Learning-rate schedules: each a class with its options and an array-API factor.

`lr × factor(step, total_steps)`, the factor written once (`Schedule.factor_xp`) and evaluated
by every backend in its own step. A class declares whether it needs the run's length
(`run_length` / `needs_run_length`): a fit that cannot know it (a stream without `len()`, no
`trainer.max_steps`) is refused rather than decaying over `DEFAULT_TOTAL_STEPS`. Plugins add
schedules with `crosstrain.register_schedule` or the `crosstrain_add_schedules` hook, and a
spec may name one as `schedule: {name: "package.module:Class"}`.

Example:
    >>> Cosine(warmup_steps=2).factor(0, 10)
    0.5
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

DEFAULT_TOTAL_STEPS = 1_000_000
"""Run length a schedule assumes when nobody says how many updates the run takes (`build`
without `total_steps`); `fit` always passes the run's own length (`crosstrain.train.run_length`)."""


def schedule_length(total_steps: int | None) -> int:
    """The run length schedules use: `total_steps`, or `DEFAULT_TOTAL_STEPS` when unknown."""
    return int(total_steps) if total_steps else DEFAULT_TOTAL_STEPS


class HostScalars:
    """The few array API functions a schedule uses, on Python floats: the host evaluates the
    same `factor_xp` as the compiled steps, at the cost of a few float operations."""

    __name__ = "crosstrain.nn.schedules.HostScalars"
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


class Schedule(BaseModel):
    """A learning-rate schedule: `lr × factor(step, total_steps)`.

    The math is written once, `factor_xp`, against the array API: the torch backend evaluates
    it on the host (`factor`, Python floats), jax inside its jitted step (`jax.numpy`),
    Keras inside its compiled step (the engine's namespace). A subclass defines
    `_after_warmup`; there is no silent default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    warmup_steps: NonNegativeInt = 0

    metric_driven: ClassVar[bool] = False
    """True when a validation metric drives the lr at epoch ends (`reduce_on_plateau`): the
    backend must declare `Capabilities.lr_scale` (`Program.set_lr_scale`)."""

    run_length: ClassVar[bool] = False
    """True when the factor depends on the run's length (`total_steps`): a fit over a stream
    without `len()` and without `trainer.max_steps` is refused (`needs_run_length`)."""

    def needs_run_length(self) -> bool:
        """Whether this configuration needs the run's length (default: the class's `run_length`)."""
        return self.run_length

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


class Constant(Schedule):
    """The base lr (after an optional linear warmup)."""

    name: Literal["constant"] = "constant"

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        return xp.ones_like(t)


class LinearWarmup(Constant):
    """Alias of `constant` that reads well: `{name: linear_warmup, warmup_steps: 100}`."""

    name: Literal["linear_warmup"] = "linear_warmup"  # type: ignore[assignment]


class StepDecay(Schedule):
    """Multiply the lr by `gamma` every `step_size` updates."""

    name: Literal["step"] = "step"
    step_size: PositiveInt = 1000
    gamma: PositiveFloat = 0.1

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        return self.gamma ** xp.floor(t / self.step_size)


class Cosine(Schedule):
    """Cosine decay to `min_ratio` × lr over `decay_steps` (default: the whole run)."""

    name: Literal["cosine"] = "cosine"
    decay_steps: PositiveInt | None = None
    min_ratio: float = Field(0.0, ge=0.0, le=1.0)

    def needs_run_length(self) -> bool:
        return self.decay_steps is None

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        progress = xp.minimum(t / (self.decay_steps or steps), xp.ones_like(t))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + xp.cos(math.pi * progress))


class LinearDecay(Schedule):
    """Linear decay to `end_ratio` × lr over the run."""

    name: Literal["linear"] = "linear"
    end_ratio: float = Field(0.0, ge=0.0, le=1.0)
    run_length = True

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        return 1.0 + (self.end_ratio - 1.0) * xp.minimum(t / steps, xp.ones_like(t))


class Exponential(Schedule):
    """Exponential change from lr to `end_ratio` × lr over `decay_steps` updates (default: the
    run, reaching it at the last update); > 1 grows: `crosstrain lr-find` sweeps the lr with it."""

    name: Literal["exponential"] = "exponential"
    end_ratio: PositiveFloat = 0.01
    decay_steps: PositiveInt | None = None

    def needs_run_length(self) -> bool:
        return self.decay_steps is None

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        span = self.decay_steps or max(steps - 1, 1)
        progress = xp.minimum(t / span, xp.ones_like(t))
        return xp.exp(math.log(self.end_ratio) * progress)


class ReduceOnPlateau(Schedule):
    """Keras's `ReduceLROnPlateau`: multiply the lr by `factor` when `monitor` has not improved
    by `min_delta` for `patience` epochs, then wait `cooldown` epochs, never below `min_lr`.

    Driven at each epoch end by the built-in callback `plugins/plateau.py` (its state, the
    current multiplier included, is in the checkpoint); the backends apply the multiplier in
    their steps (`Program.set_lr_scale`) on top of the warmup.
    """

    name: Literal["reduce_on_plateau"] = "reduce_on_plateau"
    monitor: str = Field("val_loss", description="metric to watch, e.g. `val_loss`")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="`min`/`max`: which way is better; `auto`: max for accuracies"
    )
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )
    reduce_by: float = Field(
        0.1, gt=0.0, lt=1.0, alias="factor", description="multiplies the lr at a plateau"
    )  # Keras's `factor`; the attribute name `factor` is the schedule's method
    patience: NonNegativeInt = Field(10, description="epochs without improvement before reducing")
    min_delta: NonNegativeFloat = Field(1e-4, description="smallest change that counts")
    cooldown: NonNegativeInt = Field(0, description="epochs to wait after a reduction")
    min_lr: NonNegativeFloat = Field(0.0, description="the lr never goes below this")

    metric_driven = True

    def better(self) -> str:
        """`min` or `max`: the direction of improvement (`auto`: max for accuracies, as Keras)."""
        if self.mode != "auto":
            return self.mode
        return "max" if "acc" in self.monitor else "min"

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        return xp.ones_like(t)


BUILTIN_SCHEDULES: tuple[type[Schedule], ...] = (
    Constant,
    LinearWarmup,
    StepDecay,
    Cosine,
    LinearDecay,
    Exponential,
    ReduceOnPlateau,
)


def schedule_name(cls: type[Schedule]) -> str:
    """The name a spec gives the schedule class (its `name` field's default)."""
    field = cls.model_fields.get("name")
    if field is None or not isinstance(field.default, str):
        raise TypeError(f"{cls.__name__} needs a field `name: Literal['<name>'] = '<name>'`")
    return field.default


def validate_schedule(value: Any) -> Schedule | None:
    """A Schedule (or None) from a Schedule, a name or a `{name: ..., **options}` mapping, the
    name looked up in the registry (plugins' schedules and `package.module:Class`)."""
    from crosstrain.plugin.registry import get_registry, import_reference

    if value is None or isinstance(value, Schedule):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise PydanticCustomError(
            "schedule",
            "expected a schedule mapping with a 'name' key, got {got}",
            {"got": repr(value)},
        )
    registry = get_registry()
    name = str(value["name"])
    cls = registry.schedules.find(name)
    if cls is None and ":" in name:
        try:
            cls = import_reference(name, "schedule")
        except ImportError as err:
            raise PydanticCustomError("schedule", "{message}", {"message": str(err)}) from None
        if not (isinstance(cls, type) and issubclass(cls, Schedule)):
            raise PydanticCustomError(
                "schedule", "{name} is not a crosstrain schedule class", {"name": name}
            )
        if registry.schedules.find(schedule_name(cls)) is not cls:
            with registry.owner("spec"):
                registry.schedules.add(cls)
        value = {**value, "name": schedule_name(cls)}
    if cls is None:
        raise PydanticCustomError(
            "schedule", "{message}", {"message": registry.schedules.unknown(name)}
        )
    return cls.model_validate(value)


def _validate(value: Any, handler: Any) -> Schedule | None:
    return validate_schedule(value)


AnySchedule = Annotated[Any, WrapValidator(_validate)]
"""The spec's `schedule`: any registered Schedule, by name with its options, or null."""


def applied_lr(opt: Any, schedule: Schedule | None, step: int, total_steps: int | None) -> float:
    """The learning rate of the update after `step` updates (0-based): `opt.lr` times the
    schedule's factor (warmup included), as every backend applies it."""
    return opt.lr if schedule is None else opt.lr * schedule.factor(step, total_steps)


def checked_schedule(schedule: Any) -> Schedule | None:
    """`schedule` checked for backends: None or a schedule that defines its factor; anything
    else (a dict, a foreign object) is a SpecError, never a silent factor of 1."""
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    from crosstrain.errors import SpecError, SpecIssue

    raise SpecError(SpecIssue("schedule", f"not a crosstrain schedule: {type(schedule).__name__}"))
