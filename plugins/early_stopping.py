"""Stops a fit when a monitored metric has not improved for `patience` epochs."""

from __future__ import annotations

import math
import sys
from typing import Any

from crosstrain.errors import TrainingError
from crosstrain.train.callbacks import Callback


class EarlyStopping(Callback):
    """`trainer.early_stopping: {monitor: val_loss, mode: min, patience: 3, min_delta: 0,
    baseline: null, restore_best_weights: false, check_finite: true}`.

    Keras's semantics for `baseline` (an improvement resets the wait only when it also beats
    the baseline; one that does not counts as a waited epoch, and the stop is checked on the
    next epoch that does not improve) and
    `restore_best_weights` (at the end of the fit, stopped early or not, the parameters of the
    best epoch are put back; optimizer state stays as it ended; the best parameters are a host
    copy taken at each improvement). Lightning's `check_finite`: a NaN/inf monitor stops at once.
    After a resume the best value comes back from the checkpoint but the best weights do not:
    until an epoch improves, the first epoch after the resume stands in for them, as Keras
    does when it has none.
    """

    def __init__(self, options: Any):
        self.options = options
        self.best = math.inf if options.mode == "min" else -math.inf
        self.wait = 0
        self.best_params: dict[str, Any] | None = None
        self.best_epoch: int | None = None

    state_key = "EarlyStopping"

    def state_dict(self) -> dict[str, float | int]:
        """The best value so far and the epochs waited since (JSON types)."""
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        """Restores what `state_dict` returned."""
        self.best, self.wait = float(state["best"]), int(state["wait"])

    def _improved(self, value: float, than: float) -> bool:
        delta = self.options.min_delta
        return value < than - delta if self.options.mode == "min" else value > than + delta

    def _keep_params(self, trainer: Any, epoch: int) -> None:
        if self.options.restore_best_weights:
            params = trainer.program.get_state().params
            self.best_params = {name: value.copy() for name, value in params.items()}
            self.best_epoch = epoch

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage != "train":
            return
        monitor = self.options.monitor
        if monitor not in metrics:
            raise TrainingError(
                f"trainer.early_stopping.monitor: {monitor!r} is not among the epoch metrics {sorted(metrics)}"
            )
        value = metrics[monitor]
        if self.options.check_finite and not math.isfinite(value):
            print(f"early stopping: {monitor} is {value} at epoch {epoch}", file=sys.stderr)
            trainer.should_stop = True
            return
        if self.best_params is None:
            self._keep_params(trainer, epoch)  # none yet: the current weights are the best
        if self._improved(value, self.best):
            self.best = value
            self._keep_params(trainer, epoch)
            baseline = self.options.baseline
            if baseline is None or self._improved(value, baseline):
                self.wait = 0
            else:
                self.wait += 1  # better, but not past the baseline: still waiting (as Keras)
            return
        self.wait += 1
        if self.wait >= self.options.patience:
            trainer.should_stop = True

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        if self.best_params is None:
            return
        state = trainer.program.get_state()
        state.params.update(self.best_params)
        trainer.program.set_state(state)
        result.state = None  # read again from the restored program, when read
        result.native_model = trainer.program.native_model
        result.extras["restored_best_epoch"] = self.best_epoch
