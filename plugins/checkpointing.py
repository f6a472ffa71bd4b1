"""Writes checkpoints every N epochs and on Ctrl-C; keeps the last K and the best on a metric."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from crosstrain.callbacks import Callback
from crosstrain.state import list_checkpoints


class ModelCheckpoint(Callback):
    """`trainer.checkpoint: {every_n_epochs: 1, keep: 3, monitor: val_loss, mode: min}`."""

    def __init__(self, options: Any):
        self.options = options
        self.best_value = math.inf if options.mode == "min" else -math.inf
        self.best_path: Path | None = None

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage != "train" or (epoch + 1) % self.options.every_n_epochs:
            return
        path = trainer.save_checkpoint()
        monitor = self.options.monitor
        if path is not None and monitor and monitor in metrics:
            value = metrics[monitor]
            better = (
                value < self.best_value if self.options.mode == "min" else value > self.best_value
            )
            if better:
                self.best_value, self.best_path = value, path
        self._prune(trainer)

    def on_exception(self, trainer: Any, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.global_step > 0:
            path = trainer.save_checkpoint()
            if path is not None:
                print(f"\ninterrupted: saved {path} (resume with --resume {path})", flush=True)

    def _prune(self, trainer: Any) -> None:
        if trainer.checkpoint_dir is None:
            return
        found = list_checkpoints(trainer.checkpoint_dir)
        for old in found[: -self.options.keep]:
            if old != self.best_path:
                shutil.rmtree(old, ignore_errors=True)
