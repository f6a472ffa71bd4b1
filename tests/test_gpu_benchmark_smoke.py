"""The GPU throughput benchmark on the CPU with tiny models, so it cannot rot before a GPU run.

No timing assertions: the run must finish, write both models into the table and JSON with
finite positive ratios, and the native modules must be the same networks as crosstrain's.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="the benchmark runs the torch backend"
)


def test_gpu_benchmark_cpu_smoke(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "benchmarks.gpu_throughput",
        "--device",
        "cpu",
        "--tiny",
        "--steps",
        "3",
        "--epochs",
        "2",
        "--repeats",
        "1",
        "--batch",
        "4",
        "--compile",
        "off",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [report] = tmp_path.glob("gpu-*-cpu.json")
    results = json.loads(report.read_text(encoding="utf-8"))
    assert not [run for run in results["runs"] if "error" in run]
    rows = {row["model"]: row for row in results["rows"]}
    assert set(rows) == {"cnn", "transformer"}
    for row in rows.values():
        assert row["compile"] == "off"
        assert math.isfinite(row["ratio"]["median"]) and row["ratio"]["median"] > 0
        ct, native = row["crosstrain"], row["native"]
        assert ct["samples_per_s"]["median"] > 0 and native["samples_per_s"]["median"] > 0
        # identical initial parameters and batches: the two losses agree up to bf16 noise
        assert abs(ct["final_loss"] - native["final_loss"]) < 0.05
    table = report.with_suffix(".md").read_text(encoding="utf-8")
    assert "| cnn | off | 4 |" in table and "| transformer | off | 4 |" in table
    assert "python -m benchmarks.gpu_throughput" in table and "CPU smoke run" in table


@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_native_module_is_the_spec_network(model: str) -> None:
    """At crosstrain's initial values, the hand-written module computes crosstrain's outputs."""
    import crosstrain as ct
    import torch
    from crosstrain.nn.model import init_params

    from benchmarks.gpu_models import load_canonical, make_task, native_model
    from benchmarks.gpu_runs import spec_dict

    task = make_task(model, batch=3, steps=1, epochs=1, tiny=True)
    spec_data = spec_dict(task, "cpu", False)
    spec_data["trainer"]["precision"] = "32"
    spec = ct.load_spec(spec_data)
    program = ct.build(spec, backend="torch")
    native = native_model(model, tiny=True)
    load_canonical(native, init_params(spec.model, spec.seed))
    x = torch.from_numpy(task.data()[0][:3])
    native_x = x.permute(0, 3, 1, 2) if model == "cnn" else x
    for training in (False, True):  # moving statistics, then batch statistics in BatchNorm
        program.native_model.train(training)
        native.train(training)
        with torch.no_grad():
            expected, got = program.native_model(x), native(native_x)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_load_canonical_names_a_mismatch() -> None:
    import torch

    from benchmarks.gpu_models import load_canonical

    module = torch.nn.Linear(4, 2)
    params = {"dense_0/kernel": np.zeros((3, 2), np.float32), "dense_0/bias": np.zeros(2)}
    with pytest.raises(ValueError, match=r"dense_0/kernel \(2, 3\) does not fit native weight"):
        load_canonical(module, params)


def test_cuda_without_gpu_exits_2(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the message shown when no GPU is present")
    command = [sys.executable, "-m", "benchmarks.gpu_throughput", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu_throughput: --device cuda but torch sees no CUDA GPU (use --device cpu)"
    ]
    assert not list(tmp_path.iterdir())


def test_report_pairs_repeats_and_lists_failures() -> None:
    """The GPU-side report fields (peak memory, target marks, failed runs) without a GPU."""
    from benchmarks.gpu_throughput import markdown, summarise

    def run(runner: str, repeat: int, rate: float) -> dict:
        return {
            "model": "cnn",
            "compile": "on",
            "runner": runner,
            "repeat": repeat,
            "batch": 512,
            "samples_per_s": rate,
            "warmup_s": 30.0,
            "peak_mem_mib": 2048.0 + repeat,
            "final_loss": 2.3,
        }

    runs = [run("crosstrain", 0, 990.0), run("native", 0, 1000.0)]
    runs += [run("crosstrain", 1, 900.0), run("native", 1, 1000.0)]
    runs.append({"model": "cnn", "compile": "on", "runner": "native", "repeat": 2, "error": "x"})
    [row] = summarise(runs)
    assert row["ratio"] == pytest.approx({"median": 0.945, "min": 0.9, "max": 0.99})
    assert not row["meets_target"]
    assert row["native"]["peak_mem_mib"] == 2049.0
    results = {
        "date": "2026-01-01",
        "gpu": "NVIDIA H100 80GB HBM3",
        "command": "python -m benchmarks.gpu_throughput",
        "nvidia_smi": "name, driver_version, memory.total [MiB]\nNVIDIA H100 80GB HBM3, 1, 2 MiB",
        "machine": {"python": "3.11", "cpus": 16},
        "settings": {"device": "cuda", "steps": 100, "epochs": 3, "repeats": 3},
        "titles": {"cnn": "CNN"},
        "runs": runs,
        "rows": [row],
    }
    text = markdown(results)
    assert (
        "| cnn | on | 512 | 945 [900–990] | 1,000 [1,000–1,000] | 0.945 [0.900–0.990] ✗ |" in text
    )
    assert "2,049 / 2,049" in text and "NVIDIA H100 80GB HBM3, 1, 2 MiB" in text
    assert "- cnn compile on native (repeat 2): x" in text
