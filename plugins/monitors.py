"""Callbacks a spec names in `trainer.callbacks`: `lr_monitor`, `grad_norm`, `timer`, `throughput`.

They are registered through `crosstrain_add_callbacks` like a third party's would be. Each is a
factory `Class(options, spec, run_dir)` with an `options_model` that the spec is validated
against (`trainer.callbacks[1].max_time`). What they measure reaches every logger through the
`collect_metrics` hook (or, for `grad_norm`, as a train metric of the backend's step) and never
costs a host sync of its own.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from crosstrain.errors import TrainingError
from crosstrain.plugin.hookspecs import hookimpl
from crosstrain.train.callbacks import Callback, last_update_lr
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveFloat


class _NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LearningRateMonitor(Callback):
    """`lr_monitor`: the learning rate of the latest update as `lr`, at every train metric pull
    and in the epoch's metrics.

    The rate is computed on the host from the spec (`optimizer.lr` × the schedule's factor,
    warmup included) at the number of updates applied, over the run length the backend's
    schedule was built with (`trainer.schedule_steps`); it is what every backend applies.
    """

    options_model = _NoOptions

    def __init__(self, options: dict[str, Any], spec: Any, run_dir: Path | None = None):
        self.options = self.options_model.model_validate(options)
        self.spec = spec

    def collect_metrics(self, trainer: Any) -> dict[str, float] | None:
        lr = last_update_lr(trainer)
        return None if lr is None else {"lr": lr}


class GradNormMonitor(Callback):
    """`grad_norm`: the global L2 norm of the gradients before clipping, as the train metric
    `grad_norm` (logged `train_grad_norm`, averaged over the steps of a pull or an epoch
    weighted by batch size, like the loss).

    It declares `needs = {"grad_norm"}`, so core sets `RunEnv.report_grad_norm` and the
    backend's train step reports the norm it computes for `optimizer.clip_norm` anyway; a
    backend that does not declare `Capabilities.grad_norm` refuses the spec before training.
    This callback checks that the metric arrives.
    """

    options_model = _NoOptions
    needs = frozenset({"grad_norm"})

    def __init__(self, options: dict[str, Any], spec: Any, run_dir: Path | None = None):
        self.options = self.options_model.model_validate(options)
        self.checked = False

    def collect_metrics(self, trainer: Any, metrics: dict[str, float]) -> None:
        if self.checked or "train_loss" not in metrics:
            return
        if "train_grad_norm" not in metrics:
            raise TrainingError(
                f"trainer.callbacks: grad_norm was asked for, but the {trainer.backend} backend's "
                "train step did not report it"
            )
        self.checked = True


def _seconds(value: Any) -> Any:
    """`90`, `"90"`, `"00:01:30"` or `"1:00:00:00"` (days:hours:minutes:seconds) → seconds."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d*)?", text):
            return float(text)
        if not re.fullmatch(r"(\d+:){1,3}\d+(\.\d*)?", text):
            raise ValueError(f"expected seconds or 'HH:MM:SS' (or 'DD:HH:MM:SS'), got {value!r}")
        total = 0.0
        for part, unit in zip(reversed(text.split(":")), (1, 60, 3600, 86400), strict=False):
            total += float(part) * unit
        return total
    return value


class TimerOptions(BaseModel):
    """`{name: timer, max_time: "HH:MM:SS" or seconds, interval: step|epoch}`."""

    model_config = ConfigDict(extra="forbid")
    max_time: Annotated[PositiveFloat, BeforeValidator(_seconds)] = Field(
        description="wall-clock budget of the fit: seconds, 'HH:MM:SS' or 'DD:HH:MM:SS'"
    )
    interval: Literal["step", "epoch"] = Field(
        "step", description="check after every step (stop at once) or only at epoch ends"
    )


class Timer(Callback):
    """`timer`: stops the fit once `max_time` of wall-clock time has been spent in it.

    Time counts from `on_fit_start` (build and data loading excluded, validation included) and
    survives a resume: the elapsed time is stored in each checkpoint (`callbacks.Timer`). With
    `interval: step` the fit ends at the step boundary after the budget runs out (the epoch's
    metrics cover the steps done, validation still runs and the checkpoint records the position
    in the epoch); with `epoch` at the end of that epoch. `FitResult.stopped_early` says so.
    """

    options_model = TimerOptions
    state_key = "Timer"

    def __init__(self, options: dict[str, Any], spec: Any, run_dir: Path | None = None):
        self.options = self.options_model.model_validate(options)
        self.offset = 0.0
        self.started: float | None = None

    def elapsed(self) -> float:
        """Seconds spent in the fit so far, including those before a resume."""
        running = 0.0 if self.started is None else time.monotonic() - self.started
        return self.offset + running

    def state_dict(self) -> dict[str, float]:
        """The elapsed time (JSON types)."""
        return {"elapsed": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned (the clock restarts at the next `on_fit_start`)."""
        self.offset = float(state.get("elapsed", 0.0))
        self.started = None

    def on_fit_start(self, trainer: Any) -> None:
        self.started = time.monotonic()

    def _check(self, trainer: Any, every_rank_here: bool) -> None:
        expired = self.elapsed() >= self.options.max_time
        if trainer.any_rank is not None:
            # each rank reads its own clock: decide together, where every rank is at once
            if not every_rank_here:
                return
            expired = trainer.any_rank(expired)
        if expired:
            trainer.should_stop = True

    def on_batch_end(self, trainer: Any, stage: str, logs: dict[str, float] | None) -> None:
        if stage == "train" and self.options.interval == "step":
            self._check(trainer, every_rank_here=logs is not None)  # a metric pull

    def on_epoch_end(self, trainer: Any, stage: str) -> None:
        if stage == "train":
            self._check(trainer, every_rank_here=True)


class ThroughputOptions(BaseModel):
    """`{name: throughput, flops_per_sample: N}`; the FLOP count is estimated when not given."""

    model_config = ConfigDict(extra="forbid")
    flops_per_sample: PositiveFloat | None = Field(
        None,
        description="training FLOPs per sample (default: estimated from spec.model, see "
        "crosstrain.nn.flops; none for a native model)",
    )


class ThroughputMonitor(Callback):
    """`throughput`: `samples_per_sec` and, when the FLOPs are known, `flops_per_sec`, over
    the training steps between two metric pulls and over each epoch's training steps.

    Rates are measured in wall-clock time between pulls (a pull is the trainer's host sync, so
    the device work is done) and count the rows of the global batch, so under data parallel
    they are the whole job's. The first pull of a run includes compilation. FLOPs per sample
    come from `crosstrain.nn.flops.train_flops_per_sample` (3 × the forward multiply-adds of the
    neutral model's Dense, Conv and attention products), or from `flops_per_sample`.
    """

    options_model = ThroughputOptions

    def __init__(self, options: dict[str, Any], spec: Any, run_dir: Path | None = None):
        self.options = self.options_model.model_validate(options)
        self.flops = self.options.flops_per_sample
        if self.flops is None and spec.model is not None:
            from crosstrain.nn.flops import train_flops_per_sample

            self.flops = float(train_flops_per_sample(spec.model)) or None
        self.mark = (time.perf_counter(), 0)
        self.epoch_samples, self.epoch_seconds = 0, 0.0

    def on_epoch_start(self, trainer: Any, stage: str) -> None:
        if stage == "train":
            self.mark = (time.perf_counter(), trainer.samples_seen)
            self.epoch_samples, self.epoch_seconds = 0, 0.0

    def _rates(self, samples: int, seconds: float) -> dict[str, float] | None:
        if samples <= 0 or seconds <= 0:
            return None
        rates = {"samples_per_sec": samples / seconds}
        if self.flops:
            rates["flops_per_sec"] = self.flops * samples / seconds
        return rates

    def collect_metrics(self, trainer: Any, interval: str) -> dict[str, float] | None:
        if interval == "epoch":
            return self._rates(self.epoch_samples, self.epoch_seconds)
        now, (then, seen) = time.perf_counter(), self.mark
        samples, seconds = trainer.samples_seen - seen, now - then
        self.mark = (now, trainer.samples_seen)
        self.epoch_samples += samples
        self.epoch_seconds += seconds
        return self._rates(samples, seconds)


BUILTIN_CALLBACKS: dict[str, type[Callback]] = {
    "lr_monitor": LearningRateMonitor,
    "grad_norm": GradNormMonitor,
    "timer": Timer,
    "throughput": ThroughputMonitor,
}


@hookimpl
def crosstrain_add_callbacks(registry: Any) -> None:
    for name, factory in BUILTIN_CALLBACKS.items():
        registry.callbacks.add(name, factory)
