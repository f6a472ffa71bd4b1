"""Writes checkpoints every N epochs and on Ctrl-C/SIGTERM; keeps the last K and the best.

Its own state (the best value and where it is) goes into every checkpoint's `trainer.json`
under `callbacks.ModelCheckpoint` and comes back on resume.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from crosstrain.checkpoint.format import FORMAT, list_checkpoints, remove_checkpoint
from crosstrain.errors import CrosstrainError
from crosstrain.train.callbacks import Callback


def _is_ours(path: Path) -> bool:
    try:
        return json.loads((path / "trainer.json").read_bytes()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class ModelCheckpoint(Callback):
    """`trainer.checkpoint: {every_n_epochs: 1, keep: 3, keep_best: true, save_top_k, monitor,
    mode: min}`: keeps the `keep` last checkpoints and the `top_k` best by the monitored metric.

    Without `monitor`, the best is judged on `val_loss` when the epoch has it, else `train_loss`.
    `top_k` is `save_top_k`, else 1 with `keep_best`, else 0. Pruning never deletes one of the
    last `keep` nor one of the best; a tie does not displace an earlier checkpoint.
    """

    state_key = "ModelCheckpoint"

    def __init__(self, options: Any):
        self.options = options
        self.top: list[tuple[float, Path]] = []
        """The best checkpoints so far, best first: (monitored value, directory)."""

    @property
    def best_value(self) -> float | None:
        """The monitored value of the best checkpoint (None before the first)."""
        return self.top[0][0] if self.top else None

    @property
    def best_path(self) -> Path | None:
        """The directory of the best checkpoint (None before the first)."""
        return self.top[0][1] if self.top else None

    def state_dict(self) -> dict[str, Any]:
        """The best checkpoints so far, best first, and the best one alone (JSON types)."""
        return {
            "best_value": self.best_value,
            "best_path": None if self.best_path is None else str(self.best_path),
            "top_k": [[value, str(path)] for value, path in self.top],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned (a state with only `best_*` gives one entry)."""
        entries = state.get("top_k")
        if not isinstance(entries, list):
            entries = [[state.get("best_value"), state.get("best_path")]]
        self.top = [
            (float(value), Path(path))
            for value, path in (e for e in entries if isinstance(e, list) and len(e) == 2)
            if isinstance(value, (int, float)) and isinstance(path, str) and path
        ]
        self.top = self._ranked(self.top)[: self.options.top_k]

    def _ranked(self, entries: list[tuple[float, Path]]) -> list[tuple[float, Path]]:
        """Best first; `sorted` is stable, so among equal values the earlier stays ahead."""
        return sorted(entries, key=lambda e: e[0] if self.options.mode == "min" else -e[0])

    def _monitored(self, metrics: dict[str, float]) -> float | None:
        name = self.options.monitor or ("val_loss" if "val_loss" in metrics else "train_loss")
        value = metrics.get(name)
        return value if value is not None and math.isfinite(value) else None

    def _with(self, value: float, path: Path) -> list[tuple[float, Path]] | None:
        """The top-k list with `(value, path)` in it, or None when it does not make the cut."""
        others = [e for e in self.top if e[1] != path]
        ranked = self._ranked([*others, (value, path)])[: self.options.top_k]
        return ranked if any(p == path for _, p in ranked) else None

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage != "train" or (epoch + 1) % self.options.every_n_epochs:
            return
        if trainer.checkpoint_dir is None:
            trainer.save_checkpoint()  # writes nothing; gathers a sharded state with rank 0
            return
        self._rebase(trainer)
        value = self._monitored(metrics)
        step = trainer.global_step - trainer.skipped_steps
        expected = trainer.checkpoint_dir / f"step-{step}"
        previous = self.top
        ranked = self._with(value, expected) if value is not None else None
        if ranked is not None:
            self.top = ranked  # before saving, so the checkpoint's own state lists itself
        try:
            path = trainer.save_checkpoint()
        except BaseException:
            self.top = previous
            raise
        if ranked is not None and path != expected:
            self.top = [(v, path if p == expected else p) for v, p in self.top]

    def on_checkpoint(self, trainer: Any, stage: str, path: Path) -> None:
        """Retention acts once a checkpoint is committed (under async saves, when the background
        write has landed, so the `keep` last are always whole on disk)."""
        if stage == "save" and trainer.checkpoint_dir is not None:
            self._prune(trainer)

    def on_exception(self, trainer: Any, exception: BaseException) -> None:
        if (
            not isinstance(exception, KeyboardInterrupt)
            or trainer.aborted
            or trainer.global_step == 0
        ):
            return
        if trainer.checkpoint_dir is None:
            trainer.save_checkpoint()  # writes nothing; gathers a sharded state with rank 0
            return
        try:
            path = trainer.save_checkpoint()
        except (CrosstrainError, OSError) as err:
            print(f"\ninterrupted, but the checkpoint was not saved: {err}", file=sys.stderr)
            return
        print(f"\ninterrupted: saved {path} (resume with --resume {path})", flush=True)

    def _rebase(self, trainer: Any) -> None:
        """The best checkpoints as directories of this fit's checkpoints directory, by name: a
        run directory that was moved or copied resumes with its own, never the original's."""
        self.top = [(value, trainer.checkpoint_dir / path.name) for value, path in self.top]

    def _prune(self, trainer: Any) -> None:
        self._rebase(trainer)
        found = [p for p in list_checkpoints(trainer.checkpoint_dir) if _is_ours(p)]
        best = {path.resolve() for _, path in self.top}
        for old in found[: -self.options.keep]:
            if old.resolve() not in best:
                remove_checkpoint(old)


class StepCheckpoint(Callback):
    """`trainer.checkpoint.every_n_steps` / `every_minutes`: checkpoints inside an epoch, at
    step boundaries, through its `ModelCheckpoint` (same directory, same retention of the
    `keep` last; a mid-epoch checkpoint is never one of the best, it has no epoch metrics).

    A step that ends an epoch is left to the epoch's own checkpoint when that epoch writes
    one. The minutes are measured from the fit's start or the last checkpoint written. Such a
    checkpoint records the position in the epoch, so a resume continues exactly there.
    """

    def __init__(self, checkpoints: ModelCheckpoint):
        self.checkpoints = checkpoints
        self.options = checkpoints.options
        self.last_save = time.monotonic()
        self.seen = 0

    def on_fit_start(self, trainer: Any) -> None:
        if self.options.every_minutes and trainer.program.collective_state:
            raise CrosstrainError(
                "trainer.checkpoint.every_minutes cannot be used with a sharded state (fsdp): "
                "ranks would decide at different steps; use every_n_steps"
            )
        self.last_save, self.seen = time.monotonic(), trainer.global_step

    def on_checkpoint(self, trainer: Any, stage: str) -> None:
        if stage == "save":
            self.last_save = time.monotonic()

    def on_batch_end(self, trainer: Any, stage: str) -> None:
        if stage != "train" or trainer.global_step == 0:
            return
        every, minutes = self.options.every_n_steps, self.options.every_minutes
        step, before, self.seen = trainer.global_step, self.seen, trainer.global_step
        due = bool(every) and step // every > before // every  # a fused call may pass N
        due = due or (bool(minutes) and time.monotonic() - self.last_save >= minutes * 60)
        if not due:
            return
        ends_epoch = bool(trainer.steps_per_epoch) and (
            trainer.batch_in_epoch >= trainer.steps_per_epoch
        )
        if ends_epoch and (trainer.epoch + 1) % self.options.every_n_epochs == 0:
            return
        trainer.save_checkpoint()
        if trainer.checkpoint_dir is not None:
            self.checkpoints._prune(trainer)
