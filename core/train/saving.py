"""How the trainer writes a checkpoint: at once, or on a background thread while the loop
goes on (`trainer.checkpoint.async: true`), and, for a remote run directory, uploaded too.

Under async saves the state is snapshotted to host memory on the loop thread (`host_copy`),
the write (and upload) runs on `BackgroundWriter`'s thread, and at most one is in flight.
`on_checkpoint(stage="save")` and `trainer.last_checkpoint` follow the commit, on the loop
thread: at the first step boundary after the write ended, at the next save, or when the
loop ends. A writer's error is raised there. Saves outside the loop (Ctrl-C, a failing
plugin) are written at once, after the one in flight.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from crosstrain.checkpoint.background import BackgroundWriter, host_copy
from crosstrain.checkpoint.format import write_checkpoint
from crosstrain.errors import TrainingError

if TYPE_CHECKING:
    from crosstrain.train.remote_run import RemoteRun
    from crosstrain.train.trainer import Trainer


class CheckpointSaver:
    """Writes the checkpoints of one fit (`Trainer.save_checkpoint` delegates here)."""

    def __init__(self, background: bool, remote: RemoteRun | None = None):
        self.background = background
        self.remote = remote
        self.in_loop = False
        """Set by the trainer while its loop runs: only then are saves written in background."""
        self._writer = BackgroundWriter()

    @property
    def pending(self) -> bool:
        """Whether a background write was started and its outcome not yet collected."""
        return self._writer.busy

    def _write(self, root: Path, state: Any, info: dict[str, Any]) -> Path:
        path = write_checkpoint(root, state, info)
        if self.remote is not None:
            self.remote.commit_checkpoint(path)
        return path

    def _committed(self, trainer: Trainer, path: Path | None) -> Path | None:
        if path is not None:
            trainer.last_checkpoint = path
            trainer.hook.on_checkpoint(trainer=trainer, stage="save", path=path)
        return path

    def save(self, trainer: Trainer) -> Path | None:
        """Writes the current state under `trainer.checkpoint_dir` and returns its path (under
        async saves, where it will be once committed). A process without a run directory
        returns None after its part of a collective `get_state`."""
        if trainer.checkpoint_dir is None:
            if trainer.program.collective_state:
                trainer.program.get_state()
            return None
        background = self.background and self.in_loop
        state = trainer.program.state_for_write()  # views: copied below for a background write
        if trainer.spec.trainer.detect_anomaly:
            bad = next((n for n, v in state.params.items() if not np.isfinite(v).all()), None)
            if bad is not None:
                raise TrainingError(
                    f"parameter {bad} is not finite at step {trainer.global_step}; not writing a "
                    f"poisoned checkpoint (the last good one is {trainer.last_checkpoint})"
                )
        info = trainer.trainer_info()
        root = trainer.checkpoint_dir
        if not background:
            self.wait(trainer)
            return self._committed(trainer, self._write(root, state, info))
        snapshot = host_copy(state)
        info = json.loads(json.dumps(info, default=str))  # the loop keeps changing its lists
        previous = self._writer.submit(lambda: self._write(root, snapshot, info))
        self._committed(trainer, previous)
        return root / f"step-{state.step}"

    def poll(self, trainer: Trainer) -> None:
        """At a step boundary: reports a finished background write (or raises its error)."""
        self._committed(trainer, self._writer.poll())

    def wait(self, trainer: Trainer, quiet: bool = False) -> None:
        """Waits for the write in flight and reports it; `quiet` turns its error into a warning
        (the fit is already failing with another error, which must be the one raised)."""
        try:
            self._committed(trainer, self._writer.wait())
        except Exception as err:
            if not quiet:
                raise
            warnings.warn(
                f"crosstrain: the background checkpoint write failed: {err}", stacklevel=2
            )
