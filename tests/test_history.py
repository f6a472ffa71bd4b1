"""`FitResult.history` (a list of dicts with `to_pandas()`), `FitResult.plot()` and the CLI's
`curves.png`, on real fits."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_spec
from crosstrain.cli.curves import save_curves
from crosstrain.errors import MissingDependency
from crosstrain.train.result import FitResult, History

METRICS = ["train_loss", "train_accuracy", "val_loss", "val_accuracy"]


@pytest.fixture(scope="module")
def result() -> FitResult:
    import crosstrain

    spec = tiny_spec(trainer={"max_epochs": 3, "progress": False, "checkpoint": None})
    return crosstrain.fit(spec, backend="torch", run_dir=False)


def test_history_is_a_list_of_epoch_dicts(result):
    from crosstrain.train.trainer import FitResult as FromTrainer

    assert FromTrainer is FitResult  # the old import path still works
    assert isinstance(result.history, History) and isinstance(result.history, list)
    assert [record["epoch"] for record in result.history] == [0, 1, 2]
    assert result.history[-1]["val_loss"] == result.metrics["val_loss"]
    assert result.history.metric_names() == ["loss", "accuracy"]


def test_to_pandas_has_one_row_per_epoch(result):
    frame = result.history.to_pandas()
    assert list(frame.columns) == ["epoch", "step", *METRICS]
    assert list(frame["epoch"]) == [0, 1, 2] and list(frame["step"]) == [6, 12, 18]
    assert frame["train_loss"].tolist() == [r["train_loss"] for r in result.history]


def test_to_pandas_leaves_missing_metrics_empty():
    history = History(
        [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5, "val_loss": 0.7}]
    )
    frame = history.to_pandas()
    assert list(frame.columns) == ["epoch", "train_loss", "val_loss"]
    assert math.isnan(frame["val_loss"][0]) and frame["val_loss"][1] == 0.7


def test_without_pandas_or_matplotlib_the_error_names_the_extra(result, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingDependency, match=r"to_pandas\(\) needs the 'pandas' package"):
        result.history.to_pandas()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingDependency, match=r"crosstrain\[notebook\]"):
        result.plot()


def test_plot_draws_train_and_val_curves_per_metric(result, tmp_path):
    figure = result.plot(tmp_path / "plots" / "curves.png")
    axes = figure.get_axes()
    assert [ax.get_title() for ax in axes] == ["loss", "accuracy"]
    for ax, name in zip(axes, ["loss", "accuracy"], strict=True):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines) == [f"train_{name}", f"val_{name}"]
        for key, line in lines.items():
            assert list(line.get_xdata()) == [1, 2, 3]
            assert list(line.get_ydata()) == [r[key] for r in result.history]
    assert (tmp_path / "plots" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cli_saves_curves_into_the_run_directory(tmp_path):
    spec = tiny_spec(trainer={"max_epochs": 2, "checkpoint": None})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", "--backend", "torch"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("CROSSTRAIN_")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert f"curves: {Path('runs', 'tiny', run.name, 'curves.png')}" in done.stdout


def test_without_matplotlib_the_cli_says_so_in_one_line(result, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    save_curves(dataclasses.replace(result, run_dir=tmp_path))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("curves.png skipped: "), lines
    assert "crosstrain[notebook]" in lines[0] and not (tmp_path / "curves.png").exists()
