"""Drives `schedule: {name: reduce_on_plateau}` from the epoch metrics (Keras's
`ReduceLROnPlateau`), on every backend through `Program.set_lr_scale`."""

from __future__ import annotations

import math
import sys
from typing import Any

from crosstrain.errors import TrainingError
from crosstrain.train.callbacks import Callback


class ReduceLROnPlateau(Callback):
    """Keras's rule on the multiplier of the spec's lr: at each training epoch's end, an
    improvement of `monitor` by `min_delta` resets the wait; `patience` epochs without one
    multiply the lr by `factor` (not below `min_lr`) and start `cooldown` epochs in which the
    wait does not grow. The state (best, wait, cooldown, multiplier) goes into checkpoints,
    so a resumed run continues with the same lr.
    """

    state_key = "ReduceLROnPlateau"

    def __init__(self, schedule: Any, base_lr: float):
        self.schedule, self.base_lr = schedule, float(base_lr)
        self.best = math.inf if schedule.better() == "min" else -math.inf
        self.wait, self.cooldown_counter, self.scale = 0, 0, 1.0

    def state_dict(self) -> dict[str, float | int]:
        return {
            "best": self.best,
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
            "scale": self.scale,
        }

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.cooldown_counter, self.scale = int(state["cooldown_counter"]), float(state["scale"])

    def on_fit_start(self, trainer: Any) -> None:
        self._apply(trainer)  # 1.0, or the resumed run's multiplier

    def _apply(self, trainer: Any) -> None:
        trainer.program.set_lr_scale(self.scale)
        trainer.lr_scale = self.scale

    def _improved(self, value: float) -> bool:
        delta = self.schedule.min_delta
        if self.schedule.better() == "min":
            return value < self.best - delta
        return value > self.best + delta

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage != "train":
            return
        s = self.schedule
        if s.monitor not in metrics:
            raise TrainingError(
                f"schedule.monitor: {s.monitor!r} is not among the epoch metrics {sorted(metrics)}"
            )
        value = metrics[s.monitor]
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait < s.patience:
            return
        lr = self.base_lr * self.scale
        if lr > s.min_lr:
            self.scale = max(lr * s.reduce_by, s.min_lr) / self.base_lr
            self._apply(trainer)
            print(
                f"reduce_on_plateau: {s.monitor} has not improved for {self.wait} epochs; "
                f"lr {lr:.3g} -> {self.base_lr * self.scale:.3g}",
                file=sys.stderr,
            )
            self.cooldown_counter, self.wait = s.cooldown, 0
