"""`metrics.csv` in the run directory: one row per metric pull and per epoch.

Every row is written and flushed when it is logged (appended under the header), so a fit
killed by SIGTERM, SIGKILL, Ctrl-C or a crash keeps every row it logged. When a row brings a
new metric, the header grows: the file is rewritten beside itself and renamed over, so it is
never left truncated. A resumed fit continues the file: the rows up to the checkpoint's step
are kept (later ones were trained again), new rows follow under the one header.
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
        self.columns: list[str] = []
        """The header of the file as written (empty: not written yet)."""

    def _columns(self) -> list[str]:
        columns = ["epoch", "step", "stage"]
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        return columns

    def _rewrite(self) -> None:
        columns = self._columns()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(temporary, self.path)
        self.columns = columns

    def _add(self, row: dict[str, Any]) -> None:
        """Keeps `row` and puts it in the file now: appended and flushed when the header
        already names its columns, else the whole file is rewritten with the wider header."""
        self.rows.append(row)
        if not self.columns or any(k not in self.columns for k in row):
            self._rewrite()
            return
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(row)
            handle.flush()

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
        self._rewrite()

    def on_batch_end(self, trainer: Any, stage: str, logs: dict[str, float] | None) -> None:
        if logs:
            self._add(
                {"epoch": trainer.epoch, "step": trainer.global_step, "stage": "step", **logs}
            )

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage in ("train", "test"):
            stage_name = "epoch" if stage == "train" else stage
            self._add({"epoch": epoch, "step": trainer.global_step, "stage": stage_name, **metrics})

    def on_fit_end(self, trainer: Any) -> None:
        if self.rows and self.columns != self._columns():
            self._rewrite()


@hookimpl
def crosstrain_add_loggers(registry: Any) -> None:
    registry.loggers.add("csv", CSVLogger)
