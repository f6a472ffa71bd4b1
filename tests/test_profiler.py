"""`trainer.profile: true` (issue 16 item 5): a table of where a fit's time went per phase and
the framework's own trace of a few training steps, in the run directory, on every backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import crosstrain as ct
import pytest
import yaml
from conftest import ROOT, run_python
from crosstrain.plugins import profiler
from crosstrain.plugins.profiler import PhaseTimer

SPEC = {
    "name": "timed",
    "data": {"source": "sklearn:digits", "batch_size": 128, "validation_split": 0.2},
    "model": {"input_shape": [64], "layers": [{"type": "Dense", "units": 10}]},
    "trainer": {"max_epochs": 2, "progress": False, "profile": True, "log_every_n_steps": 4},
}
PHASES = {"step", "validation step", "metric pull", "data", "callbacks", "checkpoint", "other"}


def test_phase_times_are_exclusive(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 4.0, 10.0, 10.5, 11.0, 11.25])  # enter, enter, leave, leave..
    monkeypatch.setattr(profiler.time, "perf_counter", lambda: next(clock))
    timer = PhaseTimer()
    with timer.phase("callbacks"), timer.phase("checkpoint"):  # 0 .. 4, the inner one 1 .. 2
        pass
    assert timer.seconds == {"checkpoint": 1.0, "callbacks": 3.0}
    assert list(timer.iterate([7])) == [7]  # 10 .. 10.5 the item, 11 .. 11.25 the end
    assert timer.seconds["data"] == 0.75 and timer.calls["data"] == 2
    rows = timer.rows(total=5.0)
    assert [r["phase"] for r in rows] == ["callbacks", "checkpoint", "data", "other"]
    assert rows[-1]["seconds"] == pytest.approx(0.25) and sum(r["share"] for r in rows) == 1.0


def _check_profiled_run(result_profile: list[dict], run_dir: Path | None) -> None:
    phases = {row["phase"] for row in result_profile}
    assert phases >= PHASES, phases
    assert sum(row["share"] for row in result_profile) == pytest.approx(1.0)
    assert all(row["seconds"] >= 0 for row in result_profile)
    step = next(row for row in result_profile if row["phase"] == "step")
    assert step["calls"] == 24  # 12 training steps an epoch, 2 epochs
    if run_dir is not None:
        text = (run_dir / "profile.txt").read_text()
        assert text.startswith("where the time went") and "metric pull" in text


def test_torch_profile_table_and_chrome_trace(tmp_path):
    result = ct.fit(SPEC, backend="torch", run_dir=tmp_path / "run")
    _check_profiled_run(result.extras["profile"], result.run_dir)
    trace = json.loads((result.run_dir / "profile" / "torch_trace.json").read_text())
    assert trace["traceEvents"]
    assert "Self CPU" in (result.run_dir / "profile" / "torch_ops.txt").read_text()
    program = result.program  # the timing wrappers are gone after the fit
    assert not {"train_step", "eval_step", "metrics_to_host"} & set(vars(program))


def test_jax_profile_writes_an_xplane_trace(tmp_path):
    result = ct.fit(SPEC, backend="jax", run_dir=tmp_path / "run")
    _check_profiled_run(result.extras["profile"], result.run_dir)
    assert list((result.run_dir / "profile").rglob("*.xplane.pb"))


def test_keras_tensorflow_profile_in_its_own_process(tmp_path):
    code = (
        "import json, sys\n"
        "import crosstrain as ct\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_profiler import SPEC\n"
        f"result = ct.fit(SPEC, backend='keras:tensorflow', run_dir={str(tmp_path / 'run')!r})\n"
        "print(json.dumps(result.extras['profile']))\n"
    )
    done = run_python(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_profiled_run(json.loads(done.stdout.strip().splitlines()[-1]), tmp_path / "run")
    assert list((tmp_path / "run" / "profile").rglob("*.xplane.pb"))


def test_without_a_run_directory_the_table_is_still_made():
    result = ct.fit(SPEC, backend="torch", run_dir=False)
    _check_profiled_run(result.extras["profile"], None)


def test_cli_prints_the_table(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    command = [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", "--backend", "torch"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "where the time went" in done.stdout and "native trace" in done.stdout
    (run,) = (tmp_path / "runs" / "timed").iterdir()
    assert (run / "profile.txt").is_file() and (run / "profile" / "torch_trace.json").is_file()
