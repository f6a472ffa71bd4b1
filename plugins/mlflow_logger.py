"""MLflow tracking (`trainer.loggers: [mlflow]`), through `mlflow.MlflowClient` (no global run).

Where runs go: the tracking URI in `MLFLOW_TRACKING_URI` (a server, `sqlite:///...`, a
Databricks workspace ...), as MLflow itself reads it; without it, a SQLite store in the run
directory (`sqlite:///<run_dir>/mlflow.db`, artifacts in `<run_dir>/mlartifacts/`; MLflow 3
refuses its old `./mlruns` file store unless told otherwise). Look at it with
`mlflow ui --backend-store-uri sqlite:///<run_dir>/mlflow.db`. A new SQLite store costs a few
seconds of schema migrations at the first fit; to keep every run in one place (and pay that
once) point all fits at one store, e.g. `MLFLOW_TRACKING_URI=sqlite:///runs/mlflow.db`.

The experiment is `MLFLOW_EXPERIMENT_NAME` or the spec's `name` (created when missing); the
run is named after the run directory. Each fit records:
- params: the flattened spec (`optimizer.lr`, `model.layers.0.units`); values longer than
  MLflow's limit are cut (the whole spec is the `spec.yaml` artifact), sent in batches of
  MLflow's per-request maximum;
- metrics with `step = global_step` (keys as `logger_base` describes);
- artifacts `spec.yaml` and `summary.txt` (the model table);
- tags `crosstrain.backend`, `crosstrain.run_dir` and, at the end, `crosstrain.last_checkpoint`;
- the run's end: `FINISHED`, `FAILED` on an error, `KILLED` on Ctrl-C/SIGTERM.

Requires `mlflow-skinny` and SQLAlchemy (`pip install 'crosstrain[mlflow]'`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from crosstrain.plugin.hookspecs import hookimpl
from crosstrain.spec.summary import model_summary_text

from .logger_base import TrackerLogger, flatten_spec, require


def _limits() -> tuple[int, int, int]:
    """MLflow's param value length, params per batch and metrics per batch."""
    from mlflow.utils import validation

    return (
        getattr(validation, "MAX_PARAM_VAL_LENGTH", 6000),
        getattr(validation, "MAX_PARAMS_TAGS_PER_BATCH", 100),
        getattr(validation, "MAX_METRICS_PER_BATCH", 1000),
    )


class MLflowLogger(TrackerLogger):
    """One MLflow run per fit."""

    name = "mlflow"

    def __init__(self, run_dir: Path, spec: Any, options: dict[str, Any] | None = None):
        super().__init__(run_dir, spec, options)
        require("mlflow", self.name, "mlflow")
        local = os.environ.get("MLFLOW_TRACKING_URI") is None
        store = self.run_dir.resolve()
        self.tracking_uri = f"sqlite:///{store / 'mlflow.db'}" if local else None
        self.artifact_location = (store / "mlartifacts").as_uri() if local else None
        self.experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or spec.name
        self.client: Any = None
        self.run_id: str | None = None

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(
            self.experiment_name, artifact_location=self.artifact_location
        )

    def start(self, trainer: Any) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        tags = {
            "crosstrain.backend": str(trainer.backend),
            "crosstrain.run_dir": str(self.run_dir),
        }
        run = self.client.create_run(self._experiment_id(), run_name=self.run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        max_length, per_batch, _ = _limits()
        params = [
            Param(key, str(value)[:max_length]) for key, value in flatten_spec(self.spec).items()
        ]
        for start in range(0, len(params), per_batch):
            self.client.log_batch(self.run_id, params=params[start : start + per_batch])
        self.client.log_text(self.run_id, self.spec.to_yaml(), "spec.yaml")
        table = model_summary_text(self.spec)
        if table is not None:
            self.client.log_text(self.run_id, table + "\n", "summary.txt")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]
        per_batch = _limits()[2]
        for start in range(0, len(entries), per_batch):
            self.client.log_batch(self.run_id, metrics=entries[start : start + per_batch])

    def finish(self, last_checkpoint: Path | None, status: str, step: int) -> None:
        if last_checkpoint is not None:
            self.client.set_tag(self.run_id, "crosstrain.last_checkpoint", str(last_checkpoint))
        self.client.set_terminated(self.run_id, status=status)


@hookimpl
def crosstrain_add_loggers(registry: Any) -> None:
    registry.loggers.add("mlflow", MLflowLogger)
