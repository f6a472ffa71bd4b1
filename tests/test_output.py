"""What crosstrain prints (issue 16, item 9): `-q`/`-v`, TensorFlow's native log lines, the live
progress bar at N/N, per-step curves, and compare's timings (threads, training steps only,
repeats with spread). Real frameworks and real CLI subprocesses."""

from __future__ import annotations

import importlib.util
import io
import json
import re

import crosstrain as ct
import numpy as np
import pytest
import yaml
from bad_inputs import run_cli
from conftest import tiny_spec
from crosstrain.cli.compare import measure
from crosstrain.cli.curves import StepCurves
from crosstrain.nn.optim import applied_lr
from crosstrain.plugins.progress import LiveProgressBar

NATIVE_LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit", re.MULTILINE)


@pytest.fixture
def spec_dir(tmp_path):
    spec = tiny_spec()
    spec["trainer"] = {"max_epochs": 2, "log_every_n_steps": 2}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return tmp_path


def test_quiet_prints_only_the_results_and_verbose_adds_debug_lines(spec_dir):
    quiet = run_cli("fit spec.yaml --backend torch -q", spec_dir)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.startswith("final metrics:"), quiet.stdout
    assert "Total params" not in quiet.stdout and "epoch 1/2" not in quiet.stdout
    assert "run directory" not in quiet.stdout and quiet.stderr == ""
    normal = run_cli("fit spec.yaml --backend torch", spec_dir)
    assert "Total params" in normal.stdout and "run directory: runs/tiny/" in normal.stdout
    assert "debug:" not in normal.stdout
    loud = run_cli("fit spec.yaml --backend torch --verbose", spec_dir)
    assert "debug: crosstrain 0.1.0, torch " in loud.stdout
    both = run_cli("fit spec.yaml -q -v", spec_dir)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    evaluated = run_cli("evaluate spec.yaml --checkpoint latest --backend torch -q", spec_dir)
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith("validation metrics:"), evaluated.stdout


LOG_SETTINGS = ("TF_CPP_MIN_LOG_LEVEL", "_CROSSTRAIN_SET_TF_LOG", "CROSSTRAIN_VERBOSE")
"""What decides whether native log lines show; cleared so each case starts as a user's shell
(an in-process `main()` or fit of another test in this worker may have set them)."""


def fresh_cli(line: str, cwd, env: dict[str, str] | None = None):
    import os
    import shlex
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k not in LOG_SETTINGS}
    command = [sys.executable, "-m", "crosstrain.cli", *shlex.split(line)]
    return subprocess.run(
        command, cwd=cwd, env=base | (env or {}), capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_tensorflow_native_log_lines_only_with_verbose(spec_dir):
    line = "fit spec.yaml --backend keras:tensorflow --set trainer.max_epochs=1"
    default = fresh_cli(line, spec_dir)
    assert default.returncode == 0, default.stderr
    assert not NATIVE_LOG_LINE.search(default.stderr), default.stderr
    loud = fresh_cli(f"{line} -v", spec_dir)
    assert loud.returncode == 0, loud.stderr
    assert NATIVE_LOG_LINE.search(loud.stderr), loud.stderr  # TensorFlow's own lines are back
    chosen = fresh_cli(line, spec_dir, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert NATIVE_LOG_LINE.search(chosen.stderr), chosen.stderr  # the user's level is kept


def test_live_bar_reaches_n_of_n_and_leaves_no_stale_bar():
    from rich.console import Console

    screen = io.StringIO()
    bar = LiveProgressBar()
    bar.console = Console(file=screen, force_terminal=True, width=150, color_system=None)
    spec = tiny_spec(trainer={"max_epochs": 2, "progress": False, "log_every_n_steps": 100})
    ct.fit(spec, backend="torch", run_dir=False, callbacks=[bar])
    text = screen.getvalue()
    first, rest = text.split("epoch 1/2  step 6", 1)
    second, after = rest.split("epoch 2/2  step 12", 1)
    assert "6/6" in first and "6/6" in second, text
    assert "/6" not in after.split("\n", 1)[1], after  # nothing drawn after the last epoch line


def test_step_curves_record_loss_and_the_applied_lr_and_are_plotted(tmp_path):
    pytest.importorskip("matplotlib")
    spec = tiny_spec(trainer={"max_epochs": 2, "progress": False, "log_every_n_steps": 2})
    spec["schedule"] = {"name": "cosine"}
    curves = StepCurves()
    result = ct.fit(spec, backend="jax", run_dir=False, callbacks=[curves])
    steps = [r["step"] for r in curves.records]
    assert steps == [2, 4, 6, 8, 10, 12]
    loaded = ct.load_spec(spec)
    expected = [applied_lr(loaded.optimizer, loaded.schedule, s - 1, 12) for s in steps]
    np.testing.assert_allclose([r["lr"] for r in curves.records], expected, rtol=1e-12)
    assert all(np.isfinite(r["train_loss"]) for r in curves.records)
    figure = result.plot(tmp_path / "curves.png", steps=curves.records)
    titles = [ax.get_title() for ax in figure.get_axes()]
    assert titles == ["loss", "accuracy", "loss per step", "learning rate per step"]
    lr_line = figure.get_axes()[3].get_lines()[0]
    assert list(lr_line.get_xdata()) == steps and list(lr_line.get_ydata()) == expected


def test_compare_times_training_steps_only():
    spec = tiny_spec()
    spec["data"] |= {"validation_split": 0.975, "batch_size": 32, "eval_batch_size": 1}
    spec["data"]["options"]["samples"] = 8000  # 200 rows train (7 steps), 7800 validated one by one
    spec["trainer"] = {"max_epochs": 4, "progress": False, "loggers": [], "checkpoint": None}
    found = measure(ct.load_spec(spec).to_dict(), "torch")
    # the 7800 one-row validation steps take >1 s an epoch: timed with them a step was >150 ms
    assert found["ms_per_step"] < 60, found


def test_compare_repeats_pin_threads_and_show_spread(spec_dir):
    done = run_cli(
        "compare spec.yaml --backends torch --repeats 2 --threads 1 --json rows.json "
        "--set trainer.max_epochs=2",
        spec_dir,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((spec_dir / "rows.json").read_text())
    assert len(row["ms_per_step_runs"]) == 2 and row["intra_op_threads"] == 1
    assert row["ms_per_step_min"] <= row["ms_per_step"] <= row["ms_per_step_max"]
    assert "min–max" in done.stdout and "(2/2)" in done.stdout
    refused = run_cli("compare spec.yaml --backends torch --repeats 0", spec_dir)
    assert refused.returncode == 2 and refused.stderr.startswith("error: --repeats")
