"""Weights & Biases (`trainer.loggers: [wandb]`), offline unless asked otherwise.

Configured through W&B's own environment variables, never a parallel spec tree:
- mode: `WANDB_MODE` when set (`online`, `offline`, `disabled`); otherwise `online` when
  `WANDB_API_KEY` is set and `offline` when not (a key stored by `wandb login` alone does not
  switch a fit online: set `WANDB_MODE=online`). Offline runs are uploaded later with
  `wandb sync <run_dir>/wandb/offline-run-*`;
- files: `WANDB_DIR` when set, else the run directory (`<run_dir>/wandb/...`);
- project: `WANDB_PROJECT` when set, else the spec's `name`; entity from `WANDB_ENTITY`;
  the run is named after the run directory.

Each fit records: `config` = the flattened spec (`optimizer.lr`, `model.layers.0.units`),
`wandb.log` at each metric pull and epoch with `step = global_step` (keys as `logger_base`
describes), and in the run summary `model_summary` (the model table), `last_checkpoint` and
`crosstrain_status`. The run is finished at the end of the fit (exit code 1 on an error, 130
on Ctrl-C/SIGTERM). W&B's console capture is off: crosstrain's own output is not duplicated
into the run.

`wandb.init` starts W&B's background service (about a second); set `WANDB_SILENT=true` to
quiet its messages. Requires `wandb` (`pip install 'crosstrain[wandb]'`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from crosstrain.plugin.hookspecs import hookimpl
from crosstrain.spec.summary import model_summary_text

from .logger_base import TrackerLogger, flatten_spec, require

EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}


def default_mode() -> str | None:
    """The mode to ask for: None lets `WANDB_MODE` decide; else online only with an API key."""
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbLogger(TrackerLogger):
    """One W&B run per fit."""

    name = "wandb"

    def __init__(self, run_dir: Path, spec: Any, options: dict[str, Any] | None = None):
        super().__init__(run_dir, spec, options)
        require("wandb", self.name, "wandb")
        self.run: Any = None

    def start(self, trainer: Any) -> None:
        import wandb

        self.run = wandb.init(
            project=None if os.environ.get("WANDB_PROJECT") else self.spec.name,
            dir=None if os.environ.get("WANDB_DIR") else str(self.run_dir),
            name=self.run_dir.name,
            mode=default_mode(),
            config=flatten_spec(self.spec),
            reinit="create_new",
            settings=wandb.Settings(console="off"),
        )
        table = model_summary_text(self.spec)
        if table is not None:
            self.run.summary["model_summary"] = table

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({key: float(value) for key, value in metrics.items()}, step=int(step))

    def finish(self, last_checkpoint: Path | None, status: str, step: int) -> None:
        if last_checkpoint is not None:
            self.run.summary["last_checkpoint"] = str(last_checkpoint)
        self.run.summary["crosstrain_status"] = status
        self.run.finish(exit_code=EXIT_CODES[status])


@hookimpl
def crosstrain_add_loggers(registry: Any) -> None:
    registry.loggers.add("wandb", WandbLogger)
