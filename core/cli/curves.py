"""`curves.png` of a `crosstrain fit` run: loss and metrics per epoch (`FitResult.plot`) and,
collected during the fit by `StepCurves`, training loss and learning rate per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crosstrain.errors import MissingDependency
from crosstrain.output import LOG
from crosstrain.train.callbacks import Callback, last_update_lr

CURVES_FILE = "curves.png"
"""The loss and metric curves `fit` saves into the run directory."""


class StepCurves(Callback):
    """Collects `{"step", "train_loss", "lr"}` at each training metric pull (no extra sync: the
    loss is the pulled one, the lr is computed on the host as `lr_monitor` does) for the
    per-step panels of curves.png."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def on_batch_end(self, trainer: Any, stage: str, logs: dict[str, float] | None) -> None:
        if stage != "train" or not logs or "train_loss" not in logs:
            return
        record = {"step": trainer.global_step, "train_loss": logs["train_loss"]}
        lr = last_update_lr(trainer)
        if lr is not None:
            record["lr"] = lr
        self.records.append(record)


def save_curves(result: Any, steps: list[dict[str, float]] | None = None) -> None:
    """Writes `curves.png` into the run directory (per epoch, and per step when `steps` are
    given); without matplotlib says so in one line."""
    if result.run_dir is None or not result.history:
        return
    remote = isinstance(result.run_dir, str)  # a URL: drawn here, then uploaded
    if remote:
        import tempfile

        scratch = tempfile.TemporaryDirectory()
        path = Path(scratch.name) / CURVES_FILE
    else:
        path = Path(result.run_dir) / CURVES_FILE
    try:
        result.plot(path, steps=steps)
    except MissingDependency as err:
        print(f"{CURVES_FILE} skipped: {err}")
        return
    if remote:
        from crosstrain.train.remote_run import upload_file

        with scratch:
            path = upload_file(result.run_dir, path, CURVES_FILE)
    LOG.info(f"curves: {path}")
