"""The one loop in core, driven through the torch backend: hook order, metric keys, early
stopping, checkpoints and exact resume, NaN losses, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import crosstrain as ct
import numpy as np
import pytest
from conftest import tiny_spec
from crosstrain.checkpoint.format import list_checkpoints, read_checkpoint


class Recorder(ct.Callback):
    def __init__(self):
        self.calls: list[tuple] = []

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start",))

    def on_epoch_start(self, stage, epoch):
        self.calls.append(("epoch_start", stage, epoch))

    def on_batch_end(self, stage, batch_index, logs):
        self.calls.append(("batch_end", stage, batch_index, None if logs is None else sorted(logs)))

    def on_epoch_end(self, stage, epoch, metrics):
        self.calls.append(("epoch_end", stage, epoch, sorted(metrics)))

    def on_checkpoint(self, stage, path):
        self.calls.append(("checkpoint", stage, path.name))

    def on_fit_end(self, result):
        self.calls.append(("fit_end",))


def test_hooks_fire_in_the_documented_order(tmp_path):
    spec = tiny_spec(trainer={"max_epochs": 2, "progress": False, "log_every_n_steps": 3})
    spec["data"]["options"]["samples"] = 128  # 96 train -> 3 batches of 32, 32 val -> 1 batch
    recorder = Recorder()
    ct.fit(spec, backend="torch", callbacks=[recorder], run_dir=tmp_path / "run")
    train_keys = ["train_accuracy", "train_loss"]
    epoch_keys = ["train_accuracy", "train_loss", "val_accuracy", "val_loss"]
    expected = [("fit_start",)]
    for epoch in range(2):
        expected += [("epoch_start", "train", epoch)]
        expected += [("batch_end", "train", i, train_keys if i == 2 else None) for i in range(3)]
        expected += [("epoch_start", "val", epoch), ("batch_end", "val", 0, None)]
        expected += [
            ("epoch_end", "val", epoch, ["val_accuracy", "val_loss"]),
            ("epoch_end", "train", epoch, epoch_keys),
        ]
        expected += [("checkpoint", "save", f"step-{3 * (epoch + 1)}")]
    expected += [("fit_end",)]
    assert recorder.calls == expected


def test_result_metrics_history_and_run_dir(tmp_path):
    result = ct.fit(tiny_spec(), backend="torch", run_dir=tmp_path / "run")
    assert set(result.metrics) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] * 1.5
    assert "dense_0/kernel" in result.state.params and result.state.params[
        "dense_0/kernel"
    ].shape == (8, 16)
    import torch

    assert isinstance(result.native_model, torch.nn.Module)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"spec.yaml", "metrics.csv", "checkpoints"} <= files
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,step,stage")


def test_misspelled_callback_hook_fails_at_start():
    class Typo(ct.Callback):
        def on_epoch_ned(self, trainer):
            pass

    with pytest.raises(ct.PluginError, match="on_epoch_ned"):
        ct.fit(tiny_spec(), backend="torch", callbacks=[Typo()], run_dir=False)


def test_same_seed_same_result_and_explicit_arrays():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 8)).astype(np.float32), rng.integers(0, 3, 200)
    first = ct.fit(
        tiny_spec(), backend="torch", data=(x, y), val_data=(x[:50], y[:50]), run_dir=False
    )
    second = ct.fit(
        tiny_spec(), backend="torch", data=(x, y), val_data=(x[:50], y[:50]), run_dir=False
    )
    assert first.history == second.history
    for name, value in first.state.params.items():
        np.testing.assert_array_equal(value, second.state.params[name])


def test_early_stopping_stops(tmp_path):
    spec = tiny_spec(
        trainer={
            "max_epochs": 50,
            "progress": False,
            "early_stopping": {"monitor": "train_loss", "patience": 0, "min_delta": 10.0},
        }
    )
    result = ct.fit(spec, backend="torch", run_dir=False)
    assert len(result.history) == 2 and result.stopped_early


def test_checkpoint_retention_and_exact_resume(tmp_path):
    spec = tiny_spec(trainer={"max_epochs": 4, "progress": False, "checkpoint": {"keep": 2}})
    full = ct.fit(spec, backend="torch", run_dir=tmp_path / "full")
    kept = list_checkpoints(tmp_path / "full" / "checkpoints")
    assert [p.name for p in kept] == ["step-18", "step-24"]
    state, meta = read_checkpoint(kept[-1])
    assert meta["backend"] == "torch" and meta["epoch"] == 4 and meta["spec"]["name"] == "tiny"
    assert set(state.optimizer) >= {"m/dense_0/kernel", "v/dense_0/kernel"}

    short = dict(spec, trainer={**spec["trainer"], "max_epochs": 2})
    ct.fit(short, backend="torch", run_dir=tmp_path / "resumed")
    resumed = ct.fit(
        spec, backend="torch", run_dir=tmp_path / "resumed", resume=tmp_path / "resumed"
    )
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    for name, value in full.state.params.items():
        np.testing.assert_array_equal(value, resumed.state.params[name], err_msg=name)


def test_nan_loss_stops_with_a_clear_error_and_keeps_checkpoints(tmp_path):
    spec = tiny_spec(
        optimizer={"name": "sgd", "lr": 1e30},
        trainer={"max_epochs": 5, "progress": False, "log_every_n_steps": 1},
    )
    with pytest.raises(ct.TrainingError, match=r"training loss became (nan|inf)"):
        ct.fit(spec, backend="torch", run_dir=tmp_path / "run")
    for path in list_checkpoints(tmp_path / "run" / "checkpoints"):
        state, _ = read_checkpoint(path)
        assert all(np.isfinite(v).all() for v in state.params.values())


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    spec = tiny_spec(trainer={"max_epochs": 100000, "progress": False})
    spec["data"]["options"]["samples"] = 4096
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = (
        "import sys, crosstrain as ct\n"
        "try:\n"
        f"    ct.fit({str(tmp_path / 'spec.json')!r}, backend='torch', run_dir={str(tmp_path / 'run')!r})\n"
        "except KeyboardInterrupt:\n"
        "    print('clean exit'); sys.exit(130)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list_checkpoints(tmp_path / "run" / "checkpoints"):
        time.sleep(0.2)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: saved" in out and "clean exit" in out
    latest = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    state, meta = read_checkpoint(latest)
    assert meta["global_step"] == state.step > 0
