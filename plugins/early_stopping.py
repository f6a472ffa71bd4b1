"""Stops a fit when a monitored metric has not improved for `patience` epochs."""

from __future__ import annotations

import math
from typing import Any

from crosstrain.errors import TrainingError
from crosstrain.train.callbacks import Callback


class EarlyStopping(Callback):
    """`trainer.early_stopping: {monitor: val_loss, mode: min, patience: 3, min_delta: 0}`."""

    def __init__(self, options: Any):
        self.options = options
        self.best = math.inf if options.mode == "min" else -math.inf
        self.wait = 0

    state_key = "EarlyStopping"

    def state_dict(self) -> dict[str, float | int]:
        """The best value so far and the epochs waited since (JSON types)."""
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        """Restores what `state_dict` returned."""
        self.best, self.wait = float(state["best"]), int(state["wait"])

    def _improved(self, value: float) -> bool:
        delta = self.options.min_delta
        return (
            value < self.best - delta if self.options.mode == "min" else value > self.best + delta
        )

    def on_epoch_end(self, trainer: Any, stage: str, metrics: dict[str, float]) -> None:
        if stage != "train":
            return
        monitor = self.options.monitor
        if monitor not in metrics:
            raise TrainingError(
                f"trainer.early_stopping.monitor: {monitor!r} is not among the epoch metrics {sorted(metrics)}"
            )
        if self._improved(metrics[monitor]):
            self.best, self.wait = metrics[monitor], 0
            return
        self.wait += 1
        if self.wait >= self.options.patience:
            trainer.should_stop = True
