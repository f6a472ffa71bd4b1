"""What every experiment-tracker logger shares (TensorBoard, MLflow, Weights & Biases).

A tracker logger is a `Callback` that turns the lifecycle of a fit into a few calls its
tracker understands: `start` (hyperparameters, the model summary, the spec), `log_metrics`
(host floats at one `global_step`), `finish` (the final checkpoint path and how the fit
ended). `TrackerLogger` maps the hooks onto those calls the same way for every tracker:

- metric pulls (`on_batch_end` with `logs`, train stage only) are logged under the trainer's
  own keys (`train_loss`, `train_accuracy`) at `step = trainer.global_step`;
- each finished epoch (`on_epoch_end(stage="train")`) logs `epoch` and every metric of the
  epoch (train and val) as `epoch/<key>` (`epoch/train_loss`, `epoch/val_accuracy`) at the
  same step axis, so per-pull and per-epoch curves never mix in one series;
- hyperparameters are the resolved spec flattened to `a.b.c` keys (`optimizer.lr`,
  `model.layers.0.units`: list items by index after a dot, a key every tracker accepts).

The tracker library is imported when the logger is made (the fit starts), through `require`,
so a missing library fails before any training with the extra to install.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from crosstrain.errors import import_optional
from crosstrain.train.loggers import Logger

HyperValue = bool | int | float | str
"""The value types every tracker accepts as a hyperparameter."""


def require(module: str, logger: str, extra: str) -> ModuleType:
    """Imports a tracker library, or raises `MissingDependency` naming the extra to install.

    Args:
        module: the import name (`mlflow`).
        logger: the logger's name in `trainer.loggers`, for the message.
        extra: the crosstrain extra that installs it (`mlflow`).
    """
    return import_optional(module, f"logger {logger!r}", extra)


def flatten_spec(spec: Any) -> dict[str, HyperValue]:
    """The resolved spec as flat hyperparameters: `{"optimizer.lr": 0.01, "model.layers.0.units": 16}`.

    Nested mappings join their keys with dots, list items get their index as a key; empty
    containers and None (not a hyperparameter value anywhere) are written as text.
    """
    flat: dict[str, HyperValue] = {}

    def visit(prefix: str, value: Any) -> None:
        items: Any = None
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, list | tuple):
            items = enumerate(value)
        if items is not None and len(value):
            for key, child in items:
                visit(f"{prefix}.{key}" if prefix else str(key), child)
        elif isinstance(value, bool | int | float | str):
            flat[prefix] = value
        else:
            flat[prefix] = "[]" if isinstance(value, list | tuple) else str(value)

    visit("", spec.to_dict())
    return flat


class TrackerLogger(Logger):
    """Base of the tracker loggers: maps the fit's hooks onto `start`/`log_metrics`/`finish`.

    Subclasses implement those three; `finish` is called once, with `status` `FINISHED`,
    `FAILED` (an exception) or `KILLED` (Ctrl-C or SIGTERM). Nothing is opened before
    `on_fit_start`, so a fit that fails while its callbacks are being made leaves no run behind.
    A `crosstrain.Logger`: options come from the spec through `options_model` (none so far:
    trackers are configured through their own environment variables).
    """

    name = "tracker"

    def __init__(self, run_dir: Path, spec: Any, options: dict[str, Any] | None = None):
        super().__init__(run_dir, spec, options)
        self.last_checkpoint: Path | None = None
        self.started = False

    # -- what a tracker implements ----------------------------------------------------------

    def start(self, trainer: Any) -> None:
        """Opens the tracker's run and records hyperparameters, model summary and spec."""
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Records host floats at `step` (the trainer's global step)."""
        raise NotImplementedError

    def finish(self, last_checkpoint: Path | None, status: str, step: int) -> None:
        """Records the final checkpoint path (None if none was written) and closes the run."""
        raise NotImplementedError

    # -- the hooks ----------------------------------------------------------------------------

    def on_fit_start(self, trainer: Any) -> None:
        self.start(trainer)
        self.started = True

    def on_batch_end(self, trainer: Any, stage: str, logs: dict[str, float] | None) -> None:
        if logs and stage == "train" and self.started:
            self.log_metrics(dict(logs), trainer.global_step)

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage == "train" and self.started:
            values = {"epoch": float(epoch), **{f"epoch/{k}": v for k, v in metrics.items()}}
            self.log_metrics(values, trainer.global_step)

    def on_checkpoint(self, trainer: Any, stage: str, path: Any) -> None:
        if stage == "save":
            self.last_checkpoint = Path(path)

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        if self.started:
            self.started = False
            self.finish(
                result.last_checkpoint or self.last_checkpoint, "FINISHED", trainer.global_step
            )

    def on_exception(self, trainer: Any, exception: BaseException) -> None:
        if self.started:
            self.started = False
            status = "KILLED" if isinstance(exception, KeyboardInterrupt) else "FAILED"
            self.finish(
                trainer.last_checkpoint or self.last_checkpoint, status, trainer.global_step
            )
