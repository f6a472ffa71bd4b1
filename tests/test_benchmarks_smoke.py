"""The benchmark harness in a tiny configuration, so it cannot rot (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="the smoke run uses the torch backend"
)


def test_benchmark_harness_smoke(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--tasks",
        "A",
        "--backends",
        "torch",
        "--repeats",
        "1",
        "--steps",
        "6",
        "--epochs",
        "2",
        "--no-lightning",
        "--startup-repeats",
        "1",
        "--out",
        str(tmp_path),
        "--name",
        "smoke",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text(encoding="utf-8"))
    assert not [run for run in results["runs"] if "error" in run]
    rows = {row["runner"]: row for row in results["rows"]}
    assert set(rows) == {"native:torch", "crosstrain:torch"}
    ratio = rows["crosstrain:torch"]
    assert math.isfinite(ratio["ratio"]["median"]) and ratio["ratio"]["median"] > 0
    assert math.isfinite(ratio["cpu_ratio"]["median"]) and ratio["cpu_ratio"]["median"] > 0
    assert results["startup"]["frameworks_loaded_by_import"] == []
    assert math.isfinite(results["startup"]["help_s"]["median"])
    table = (tmp_path / "smoke.md").read_text(encoding="utf-8")
    assert "| crosstrain:torch |" in table and "python -m benchmarks" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "smoke.png").stat().st_size > 0
