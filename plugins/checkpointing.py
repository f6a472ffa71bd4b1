"""Writes checkpoints every N epochs and on Ctrl-C/SIGTERM; keeps the last K and the best.

Its own state (the best value and where it is) goes into every checkpoint's `trainer.json`
under `callbacks.ModelCheckpoint` and comes back on resume.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from crosstrain.callbacks import Callback
from crosstrain.errors import CrosstrainError
from crosstrain.state import FORMAT, list_checkpoints, remove_checkpoint


def _is_ours(path: Path) -> bool:
    try:
        return json.loads((path / "trainer.json").read_bytes()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class ModelCheckpoint(Callback):
    """`trainer.checkpoint: {every_n_epochs: 1, keep: 3, keep_best: true, monitor, mode: min}`.

    Without `monitor`, the best is judged on `val_loss` when the epoch has it, else `train_loss`.
    """

    state_key = "ModelCheckpoint"

    def __init__(self, options: Any):
        self.options = options
        self.best_value: float | None = None
        self.best_path: Path | None = None

    def state_dict(self) -> dict[str, Any]:
        """The best value and checkpoint so far (JSON types)."""
        return {
            "best_value": self.best_value,
            "best_path": None if self.best_path is None else str(self.best_path),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned."""
        value = state.get("best_value")
        self.best_value = float(value) if isinstance(value, (int, float)) else None
        self.best_path = Path(state["best_path"]) if state.get("best_path") else None

    def _monitored(self, metrics: dict[str, float]) -> float | None:
        name = self.options.monitor or ("val_loss" if "val_loss" in metrics else "train_loss")
        value = metrics.get(name)
        return value if value is not None and math.isfinite(value) else None

    def _better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value < self.best_value if self.options.mode == "min" else value > self.best_value

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage != "train" or (epoch + 1) % self.options.every_n_epochs:
            return
        if trainer.checkpoint_dir is None:
            return
        value = self._monitored(metrics)
        previous = self.best_value, self.best_path
        better = self.options.keep_best and value is not None and self._better(value)
        if better:
            self.best_value = value
            step = trainer.global_step - trainer.skipped_steps
            self.best_path = trainer.checkpoint_dir / f"step-{step}"
        try:
            path = trainer.save_checkpoint()
        except BaseException:
            self.best_value, self.best_path = previous
            raise
        if better:
            self.best_path = path
        self._prune(trainer)

    def on_exception(self, trainer: Any, exception: BaseException) -> None:
        if (
            not isinstance(exception, KeyboardInterrupt)
            or trainer.aborted
            or trainer.global_step == 0
            or trainer.checkpoint_dir is None
        ):
            return
        try:
            path = trainer.save_checkpoint()
        except (CrosstrainError, OSError) as err:
            print(f"\ninterrupted, but the checkpoint was not saved: {err}", file=sys.stderr)
            return
        print(f"\ninterrupted: saved {path} (resume with --resume {path})", flush=True)

    def _prune(self, trainer: Any) -> None:
        found = [p for p in list_checkpoints(trainer.checkpoint_dir) if _is_ours(p)]
        for old in found[: -self.options.keep]:
            if old != self.best_path:
                remove_checkpoint(old)
