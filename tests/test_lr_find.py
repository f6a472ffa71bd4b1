"""The learning-rate range test (issue 16 item 4): `crosstrain lr-find` / `crosstrain.lr_find`
sweeps the lr exponentially with the `exponential` schedule on every backend, records each
step's loss, stops on divergence and suggests the lr of the steepest descent."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import crosstrain as ct
import numpy as np
import pytest
import yaml
from conftest import call_in_fresh_python
from crosstrain.errors import CrosstrainError
from crosstrain.nn.optim import HOST, Exponential
from crosstrain.train.lr_find import range_test_spec, suggest

SPEC = {
    "name": "sweep",
    "seed": 3,
    "data": {"source": "sklearn:digits", "batch_size": 64, "validation_split": 0.2},
    "model": {"input_shape": [64], "layers": [{"type": "Dense", "units": 10}]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"progress": False},
}
STEPS, MIN_LR, MAX_LR = 40, 1e-5, 10.0


def sweep(backend: str) -> dict:
    found = ct.lr_find(SPEC, backend=backend, min_lr=MIN_LR, max_lr=MAX_LR, steps=STEPS)
    return {"lrs": found.lrs, "losses": found.losses, "suggestion": found.suggestion}


def test_exponential_schedule_runs_from_lr_to_end_ratio():
    schedule = Exponential(end_ratio=1000.0)
    factors = [schedule.factor(step, 31) for step in range(31)]
    assert factors[0] == 1.0 and math.isclose(factors[-1], 1000.0, rel_tol=1e-6)
    assert np.allclose(np.diff(np.log(factors)), math.log(1000.0) / 30)
    as_numpy = schedule.factor_xp(np, np.arange(31), 31)  # the compiled steps' form
    assert np.allclose(as_numpy, factors, rtol=1e-6)
    assert schedule.factor(50, 31) == factors[-1]  # held past the end
    assert HOST.exp(0.0) == 1.0


def test_range_test_spec_sweeps_and_turns_off_what_would_write_or_stop():
    spec = range_test_spec(ct.load_spec(SPEC), 1e-6, 1.0, 50)
    assert spec.optimizer.lr == 1e-6 and spec.schedule.name == "exponential"
    assert spec.schedule.end_ratio == pytest.approx(1e6)
    trainer = spec.trainer
    assert (trainer.max_steps, trainer.log_every_n_steps, trainer.limit_val_batches) == (50, 1, 0)
    assert trainer.checkpoint is None and trainer.loggers == [] and not trainer.detect_anomaly
    for low, high, steps in [(1.0, 0.1, 50), (0.0, 1.0, 50), (1e-5, 1.0, 2)]:
        with pytest.raises(CrosstrainError, match="lr-find"):
            range_test_spec(ct.load_spec(SPEC), low, high, steps)


def test_suggestion_is_the_steepest_descent_and_none_for_a_flat_loss():
    lrs = list(np.geomspace(1e-6, 1.0, 60))
    falling = [2.0 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 3))) for lr in lrs]
    assert 3e-4 < suggest(lrs, falling) < 3e-3  # the sigmoid's middle is at 1e-3
    assert suggest(lrs, [1.0] * 60) is None
    assert suggest(lrs[:2], falling[:2]) is None


@pytest.fixture(scope="module")
def torch_sweep() -> dict:
    return sweep("torch")


def test_torch_sweep_records_each_step_and_suggests_a_falling_lr(torch_sweep):
    lrs, losses = torch_sweep["lrs"], torch_sweep["losses"]
    assert lrs[0] == pytest.approx(MIN_LR) and 10 < len(lrs) <= STEPS
    ratio = (MAX_LR / MIN_LR) ** (1 / (STEPS - 1))
    assert np.allclose(np.array(lrs[1:]) / np.array(lrs[:-1]), ratio)
    suggestion = torch_sweep["suggestion"]
    assert suggestion is not None and MIN_LR < suggestion < MAX_LR
    at = lrs.index(suggestion)  # on the way down: below the start, before the lowest loss
    assert losses[at] < losses[0] and at <= int(np.argmin(losses))


def _same_early_losses(other: dict, reference: dict) -> None:
    """The backends start from the same parameters and data order, so the losses of the first
    steps (small lrs, before divergence amplifies rounding) agree closely."""
    count = 20
    assert np.allclose(other["losses"][:count], reference["losses"][:count], rtol=1e-3)
    assert np.allclose(other["lrs"], reference["lrs"][: len(other["lrs"])])


def test_jax_sweep_matches_torch(torch_sweep):
    _same_early_losses(sweep("jax"), torch_sweep)


def test_keras_sweep_matches_torch(torch_sweep):
    _same_early_losses(call_in_fresh_python("test_lr_find", "sweep", "keras:jax"), torch_sweep)


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "crosstrain.cli", "lr-find", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_prints_the_set_writes_the_spec_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    args = ["spec.yaml", "--backend", "torch", "--steps", "30", "--set", "data.batch_size=32"]
    done = run_cli([*args, "--write", "tuned.yaml", "--plot", "curve.png"], tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("use it:"))
    lr = float(line.split("optimizer.lr=")[1])
    assert line == f"use it: crosstrain fit spec.yaml --set optimizer.lr={lr:.3g}"
    tuned = ct.load_spec(tmp_path / "tuned.yaml")
    assert tuned.optimizer.lr == lr and tuned.data.batch_size == 32  # --set kept
    assert tuned.schedule is None and tuned.trainer.max_steps is None  # not the sweep's
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png", "spec.yaml", "tuned.yaml"]

    bad = run_cli(["spec.yaml", "--min-lr", "1", "--max-lr", "0.1"], tmp_path)
    assert bad.returncode == 2
    assert "error: lr-find: need 0 < min_lr < max_lr, got 1 and 0.1" in bad.stderr
