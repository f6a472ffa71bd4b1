"""`metrics.csv` in the run directory: one row per metric pull and per epoch.

A resumed fit continues the file: the rows up to the checkpoint's step are kept (later ones
were trained again), new rows follow under the one header. The file is replaced atomically
(written beside it, then renamed), so a crash never leaves it truncated.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from crosstrain.plugin.hookspecs import hookimpl
from crosstrain.train.callbacks import Callback


class CSVLogger(Callback):
    """Rows `epoch, step, stage, <metric>...`; the header grows as new metrics appear."""

    def __init__(self, run_dir: Path, spec: Any = None):
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []

    def _write(self) -> None:
        columns = ["epoch", "step", "stage"]
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(temporary, self.path)

    def on_fit_start(self, trainer: Any) -> None:
        """On a resume, keeps the rows of the existing file up to the checkpoint's step."""
        if trainer.global_step == 0 or not self.path.is_file():
            return
        with self.path.open(newline="", encoding="utf-8") as handle:
            kept = [
                {k: v for k, v in row.items() if v != "" and k is not None}
                for row in csv.DictReader(handle)
                if row.get("step", "").isdigit() and int(row["step"]) <= trainer.global_step
            ]
        self.rows = kept + self.rows

    def on_batch_end(self, trainer: Any, stage: str, logs: dict[str, float] | None) -> None:
        if logs:
            self.rows.append(
                {"epoch": trainer.epoch, "step": trainer.global_step, "stage": "step", **logs}
            )

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage in ("train", "test"):
            self.rows.append(
                {
                    "epoch": epoch,
                    "step": trainer.global_step,
                    "stage": "epoch" if stage == "train" else stage,
                    **metrics,
                }
            )
            self._write()

    def on_fit_end(self, trainer: Any) -> None:
        self._write()


@hookimpl
def crosstrain_add_loggers(registry: Any) -> None:
    registry.loggers.add("csv", CSVLogger)
