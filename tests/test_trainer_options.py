"""Day-two trainer options (issue 16): batch limits, fast_dev_run, validation inside an epoch,
checkpoints every N steps / T minutes that resume exactly (with gradient accumulation too), and
the Keras early-stopping options. Real fits on torch (and jax where the path differs)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import crosstrain as ct
import numpy as np
import pytest

ROWS = 90


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 6)).astype(np.float32)
    return x, rng.integers(0, 3, size=ROWS).astype(np.int64)


def _spec(**trainer: Any) -> Any:
    return ct.load_spec(
        {
            "name": "options",
            "seed": 3,
            "data": {"batch_size": 8, "validation_split": 0.0},
            "model": {
                "input_shape": [6],
                "layers": [
                    {"type": "Dense", "units": 8},
                    {"type": "Tanh"},
                    {"type": "Dense", "units": 3},
                ],
            },
            "optimizer": {"name": "adam", "lr": 0.05},
            "schedule": {"name": "cosine", "warmup_steps": 2},
            "trainer": {
                "max_epochs": 2,
                "progress": False,
                "loggers": [],
                "log_every_n_steps": 1,
                **trainer,
            },
        }
    )


class Seen(ct.Callback):
    """Counts validation passes and records the parameters after each epoch."""

    def __init__(self) -> None:
        self.val_passes: list[int] = []
        self.params: list[dict[str, np.ndarray]] = []

    def on_epoch_end(self, trainer: Any, stage: str) -> None:
        if stage == "val":
            self.val_passes.append(trainer.global_step)
        if stage == "train":
            self.params.append(dict(trainer.program.get_state().params))


@pytest.mark.parametrize(
    ("limit", "per_epoch"),
    [(3, 3), (0.5, 6), (1.0, 12), (100, 12)],
    ids=["count", "half", "all", "over"],
)
def test_limit_train_batches(limit: Any, per_epoch: int) -> None:
    result = ct.fit(
        _spec(limit_train_batches=limit, checkpoint=None),
        backend="torch",
        data=_data(),
        run_dir=False,
    )
    assert [h["step"] for h in result.history] == [per_epoch, 2 * per_epoch]  # 12 batches of 8


def test_limit_val_batches_counts_rows_scored() -> None:
    x, y = _data()
    rows: list[int] = []

    class Rows(ct.Callback):
        def on_batch_end(self, stage: str, batch_index: int) -> None:
            if stage == "val":
                rows.append(batch_index)

    spec = _spec(limit_val_batches=2, checkpoint=None, max_epochs=1)
    ct.fit(spec, backend="torch", data=(x, y), val_data=(x, y), run_dir=False, callbacks=[Rows()])
    assert rows == [0, 1]
    none = ct.fit(
        spec.override({"trainer.limit_val_batches": 0}),
        backend="torch",
        data=(x, y),
        val_data=(x, y),
        run_dir=False,
    )
    assert "val_loss" not in none.metrics


@pytest.mark.parametrize(("value", "steps"), [(True, 1), (3, 3)])
def test_fast_dev_run_runs_n_batches_and_writes_nothing(
    tmp_path: Path, monkeypatch: Any, value: Any, steps: int
) -> None:
    monkeypatch.chdir(tmp_path)
    x, y = _data()
    seen = Seen()
    spec = _spec(fast_dev_run=value, max_epochs=5, loggers=["csv"])
    result = ct.fit(spec, backend="torch", data=(x, y), val_data=(x, y), callbacks=[seen])
    assert [h["step"] for h in result.history] == [steps]
    assert "val_loss" in result.metrics and len(seen.val_passes) == 1
    assert list(tmp_path.iterdir()) == []  # no run directory, checkpoint or log
    assert result.run_dir is None and result.last_checkpoint is None


def test_val_check_interval_validates_inside_the_epoch() -> None:
    x, y = _data()
    seen = Seen()
    spec = _spec(val_check_interval=5, checkpoint=None)
    ct.fit(spec, backend="torch", data=(x, y), val_data=(x, y), run_dir=False, callbacks=[seen])
    # 12 steps an epoch: at 5, 10, the epoch end 12, then 15, 20, 24
    assert seen.val_passes == [5, 10, 12, 15, 20, 24]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_every_n_steps_checkpoints_resume_exactly_with_accumulation(
    tmp_path: Path, backend: str
) -> None:
    x, y = _data()
    # micro-batches of 8, 4 per step: 3 optimizer steps an epoch (4, 4, 3 + a 2-row batch)
    spec = _spec(
        accumulate_grad_batches=4, checkpoint={"every_n_steps": 2, "keep": 10}, max_epochs=3
    )
    full = ct.fit(spec, backend=backend, data=(x, y), run_dir=tmp_path / "full")
    names = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert names == [f"step-{n}" for n in (2, 3, 4, 6, 8, 9)]  # 3, 6, 9 end an epoch
    import json

    record = json.loads((tmp_path / "full" / "checkpoints" / "step-4" / "trainer.json").read_text())
    assert (record["epoch"], record["batch_in_epoch"], record["global_step"]) == (1, 1, 4)
    resumed = ct.fit(
        spec,
        backend=backend,
        data=(x, y),
        resume=tmp_path / "full" / "checkpoints" / "step-4",
        run_dir=tmp_path / "resumed",
    )
    assert resumed.history[-1]["step"] == full.history[-1]["step"] == 9
    for name, value in full.state.params.items():
        np.testing.assert_allclose(
            resumed.state.params[name], value, rtol=1e-6, atol=1e-7, err_msg=name
        )
    for name, value in full.state.optimizer.items():
        np.testing.assert_allclose(
            resumed.state.optimizer[name], value, rtol=1e-6, atol=1e-7, err_msg=name
        )


def test_every_minutes_writes_mid_epoch_checkpoints(tmp_path: Path) -> None:
    spec = _spec(checkpoint={"every_minutes": 1e-9, "every_n_epochs": 5, "keep": 100}, max_epochs=1)
    ct.fit(spec, backend="torch", data=_data(), run_dir=tmp_path)
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "checkpoints").iterdir())
    assert steps == list(range(1, 13))  # at every step boundary, the epoch's last one included


# -- early stopping, Keras's options --------------------------------------------------------------


def _stopping(**options: Any) -> Any:
    return _spec(checkpoint=None, max_epochs=8, early_stopping={"monitor": "train_loss", **options})


def test_restore_best_weights_puts_back_the_best_epoch() -> None:
    seen = Seen()
    # train_loss falls every epoch, so with mode max the first epoch is the best one
    spec = _stopping(mode="max", patience=2, restore_best_weights=True)
    result = ct.fit(spec, backend="torch", data=_data(), run_dir=False, callbacks=[seen])
    assert len(result.history) == 3 and result.stopped_early
    assert result.extras["restored_best_epoch"] == 0
    for name, value in seen.params[0].items():
        np.testing.assert_array_equal(result.state.params[name], value)
    assert not np.array_equal(seen.params[-1]["dense_0/kernel"], seen.params[0]["dense_0/kernel"])
    plain = ct.fit(
        spec.override({"trainer.early_stopping.restore_best_weights": False}),
        backend="torch",
        data=_data(),
        run_dir=False,
    )
    np.testing.assert_array_equal(
        plain.state.params["dense_0/kernel"], seen.params[-1]["dense_0/kernel"]
    )


def test_baseline_not_beaten_counts_as_waiting() -> None:
    # a tiny lr and min_delta: no epoch after the first counts as an improvement
    spec = _stopping(patience=2, min_delta=1e-3).override({"optimizer.lr": 1e-9})
    without = ct.fit(spec, backend="torch", data=_data(), run_dir=False)
    with_baseline = ct.fit(
        spec.override({"trainer.early_stopping.baseline": 0.0}),
        backend="torch",
        data=_data(),
        run_dir=False,
    )
    assert len(without.history) == 3  # best at epoch 0, then 2 epochs of patience
    assert len(with_baseline.history) == 2  # epoch 0 did not beat 0.0: it already waited


class NaNMetric(ct.Callback):
    def collect_metrics(self, interval: str) -> dict[str, float]:
        return {"odd": math.nan} if interval == "epoch" else {}


@pytest.mark.parametrize(("check_finite", "epochs"), [(True, 1), (False, 2)])
def test_check_finite_stops_on_a_nan_monitor(check_finite: bool, epochs: int) -> None:
    # without the check a NaN is just never an improvement: patience 2 runs out after 2 epochs
    spec = _stopping(monitor="odd", patience=2, check_finite=check_finite)
    result = ct.fit(spec, backend="torch", data=_data(), run_dir=False, callbacks=[NaNMetric()])
    assert len(result.history) == epochs


DETERMINISTIC = """
import json, os, numpy as np
import crosstrain as ct
import sys
sys.path.insert(0, "tests")
from test_trainer_options import _data, _spec
backend = sys.argv[1]
runs = [ct.fit(_spec(deterministic=True, checkpoint=None), backend=backend, data=_data(), run_dir=False)
        for _ in range(2)]
same = all(np.array_equal(runs[0].state.params[k], runs[1].state.params[k]) for k in runs[0].state.params)
found = {"same": same, "xla": os.environ.get("XLA_FLAGS", ""), "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
if backend == "torch":
    import torch
    found["torch"] = torch.are_deterministic_algorithms_enabled()
print(json.dumps(found))
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_deterministic_sets_the_frameworks_switches(backend: str) -> None:
    import json
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run(
        [sys.executable, "-c", DETERMINISTIC, backend],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["same"]
    if backend == "torch":
        assert found["torch"] and found["cublas"] == ":4096:8"
    else:
        assert "--xla_gpu_deterministic_ops=true" in found["xla"]
