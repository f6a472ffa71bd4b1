"""Experiment-tracker loggers against the real libraries: each fit's records are read back with
the tracker's own reader (TensorBoard's EventAccumulator, `mlflow.MlflowClient`, the W&B
offline transaction log parsed with W&B's own protobuf `Record`)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import types
from pathlib import Path

import crosstrain as ct
import pytest
import yaml
from conftest import run_python, tiny_spec
from crosstrain.errors import PluginHookError
from crosstrain.plugins.logger_base import flatten_spec
from crosstrain.train.callbacks import Callback

# tiny_spec: 192 training rows in batches of 32 = 6 steps per epoch, a metric pull every 2
PULL_STEPS = [2, 4, 6, 8, 10, 12]
EPOCH_STEPS = [6, 12]


def logged_spec(*loggers: str) -> dict:
    spec = tiny_spec()
    spec["trainer"] = {**spec["trainer"], "loggers": list(loggers)}
    return spec


def test_flatten_spec_gives_dotted_scalar_hyperparameters() -> None:
    flat = flatten_spec(ct.load_spec(tiny_spec()))
    assert flat["optimizer.lr"] == 0.01
    assert flat["optimizer.name"] == "adam"
    assert flat["model.layers.0.units"] == 16
    assert flat["model.input_shape.0"] == 8
    assert flat["trainer.max_epochs"] == 2
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())


# -- TensorBoard --------------------------------------------------------------------------------


def read_events(log_dir: Path, monkeypatch: pytest.MonkeyPatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # tensorboard's documented switch to its TensorFlow stub: reading must not import TF
    monkeypatch.setitem(sys.modules, "tensorboard.compat.notf", types.ModuleType("notf"))
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return accumulator


def tensor_text(accumulator, tag: str) -> str:
    from tensorboard.util import tensor_util

    value = tensor_util.make_ndarray(accumulator.Tensors(tag)[-1].tensor_proto)
    return value.item().decode() if hasattr(value, "item") else str(value)


def test_tensorboard_events_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tensorflow_before = "tensorflow" in sys.modules
    result = ct.fit(logged_spec("tensorboard"), run_dir=tmp_path)
    assert tensorflow_before or "tensorflow" not in sys.modules  # the writer imports no TF
    events = read_events(tmp_path / "tensorboard", monkeypatch)
    scalars = events.Tags()["scalars"]
    assert {"train_loss", "train_accuracy", "epoch/train_loss", "epoch/val_loss"} <= set(scalars)
    assert [e.step for e in events.Scalars("train_loss")] == PULL_STEPS
    epoch_loss = events.Scalars("epoch/val_loss")
    assert [e.step for e in epoch_loss] == EPOCH_STEPS
    assert epoch_loss[-1].value == pytest.approx(result.metrics["val_loss"], rel=1e-6)
    assert "Dense" in tensor_text(events, "model_summary")
    assert "lr: 0.01" in tensor_text(events, "spec")
    assert str(result.last_checkpoint) in tensor_text(events, "checkpoint")

    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == pytest.approx(0.01)
    assert hparams["model.layers.0.type"].string_value == "Dense"


# -- MLflow -------------------------------------------------------------------------------------


class FailAtSecondEpoch(Callback):
    def on_epoch_end(self, stage: str, epoch: int) -> None:
        if stage == "train" and epoch == 1:
            raise RuntimeError("deliberate failure")


def test_mlflow_runs_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A default store in the run directory, then (one store migration only, to stay fast) the
    same store named by `MLFLOW_TRACKING_URI` for a fit that fails."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    # MLflow resolves a bare sqlite store's artifact root (./mlruns) against the working
    # directory when it first opens the store (it caches stores per URI), so start in tmp_path
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "first"
    result = ct.fit(logged_spec("mlflow"), run_dir=first)

    store = f"sqlite:///{first / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == first.name
    assert run.data.params["optimizer.lr"] == "0.01"
    assert run.data.params["model.layers.0.units"] == "16"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == PULL_STEPS
    val = client.get_metric_history(run.info.run_id, "epoch/val_loss")
    assert [m.step for m in val] == EPOCH_STEPS
    assert val[-1].value == pytest.approx(result.metrics["val_loss"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spec.yaml", "summary.txt"} <= artifacts
    spec_file = client.download_artifacts(run.info.run_id, "spec.yaml", str(tmp_path / "dl"))
    assert yaml.safe_load(Path(spec_file).read_text())["optimizer"]["lr"] == 0.01
    assert run.data.tags["crosstrain.last_checkpoint"] == str(result.last_checkpoint)
    assert run.data.tags["crosstrain.backend"] == "torch"
    assert str(first / "mlartifacts") in run.info.artifact_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "shared-experiment")
    second = tmp_path / "second"
    with pytest.raises(PluginHookError, match="FailAtSecondEpoch hook on_epoch_end: .*deliberate"):
        ct.fit(logged_spec("mlflow"), run_dir=second, callbacks=[FailAtSecondEpoch()])
    assert not (second / "mlflow.db").exists()
    experiment = client.get_experiment_by_name("shared-experiment")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    # the failing hook's interrupt checkpoint (end of epoch 2) is the last one the run knows
    assert run.data.tags["crosstrain.last_checkpoint"] == str(second / "checkpoints" / "step-12")


# -- Weights & Biases ---------------------------------------------------------------------------


def wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (`run-*.wandb`): a 7-byte file header, then
    LevelDB-log framing (32 KiB blocks of chunks: crc32 u32, length u16, type u8), each whole
    record one protobuf `Record` of W&B's own schema."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # the tail of a block too short for a header
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if position + 7 + length > len(data):  # a chunk still being written
            break
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending += chunk
        if kind in (1, 4):  # FULL, or LAST of a FIRST/MIDDLE/LAST sequence
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
        elif kind == 0:
            pending = b""
    return records


def test_wandb_offline_run_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = ct.fit(logged_spec("wandb"), run_dir=tmp_path)

    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")  # offline without an API key
    (log,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + 60
    while True:  # W&B's service may still be writing the log when `finish` has returned
        records = wandb_records(log)
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "tiny" and run.display_name == tmp_path.name
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["optimizer.lr"] == 0.01 and config["model.layers.0.units"] == 16

    rows = [
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [row["_step"] for row in rows if "train_loss" in row] == PULL_STEPS
    epochs = [row for row in rows if "epoch/val_loss" in row]
    assert epochs[-1]["epoch/val_loss"] == pytest.approx(result.metrics["val_loss"])

    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    assert summary["last_checkpoint"] == str(result.last_checkpoint)
    assert "Dense" in summary["model_summary"]
    assert summary["crosstrain_status"] == "FINISHED"
    assert "exit" in kinds


# -- missing libraries and the command line -----------------------------------------------------


def test_missing_tracker_library_names_the_extra(tmp_path: Path) -> None:
    code = f"""
import sys
for blocked in ("tensorboard", "mlflow", "wandb"):
    sys.modules[blocked] = None
import crosstrain as ct
from crosstrain.errors import MissingDependency
for logger in ("tensorboard", "mlflow", "wandb"):
    spec = {logged_spec("csv")!r}
    spec["trainer"]["loggers"] = ["csv", logger]
    try:
        ct.fit(spec, run_dir=r"{tmp_path}/" + logger)
    except MissingDependency as err:
        print("MISSING", err)
    else:
        print("TRAINED", logger)
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("MISSING", "TRAINED"))]
    assert len(lines) == 3 and all(line.startswith("MISSING") for line in lines), done.stdout
    for line, extra in zip(lines, ("tensorboard", "mlflow", "wandb"), strict=True):
        assert f"logger '{extra}'" in line and f"pip install 'crosstrain[{extra}]'" in line
    # raised when the fit starts, before any step: nothing trained, no checkpoint
    assert not list(tmp_path.glob("*/checkpoints/step-*"))


def test_cli_logger_flag_writes_tensorboard_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_spec()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    command = [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", "--logger"]
    command += ["tensorboard", "--no-progress", "--run-dir", "runs"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    assert not (run_dir / "metrics.csv").exists()  # --logger replaced trainer.loggers ([csv])
    events = read_events(run_dir / "tensorboard", monkeypatch)
    assert [e.step for e in events.Scalars("epoch/train_loss")] == EPOCH_STEPS
