"""Runs the benchmark configurations, each in its own process, interleaved over repeats.

Each repeat visits every (task, runner) pair once in an order rotated per repeat, so slow
phases of a shared machine spread over all runners. A ratio is computed per repeat against
the native runner of the same framework measured in that repeat, then summarised by its
median and range.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("torch", "jax", "flax", "optax", "keras", "tensorflow")
ENGINES = ("jax", "tensorflow", "torch")
TARGETS: dict[tuple[str, str], float] = {
    ("A", "crosstrain:torch"): 1.05,
    ("B", "crosstrain:torch"): 1.02,
    ("A", "crosstrain:jax"): 1.10,
    ("B", "crosstrain:jax"): 1.02,
}
KERAS_TARGET = 1.05
IMPORT_TARGET_S = 0.3


def baseline(runner: str) -> str | None:
    """The native runner a runner is compared with (None for the natives themselves)."""
    kind, _, backend = runner.partition(":")
    if kind == "lightning":
        return "native:torch"
    return f"native:{backend}" if kind == "crosstrain" else None


def target(task: str, runner: str) -> float | None:
    """The ratio a crosstrain runner should stay under on a task (None: no target)."""
    if runner.startswith("crosstrain:keras"):
        return KERAS_TARGET
    return TARGETS.get((task, runner))


def available(backend: str) -> bool:
    """Whether a backend's framework is installed (no import)."""
    names = {"torch": ["torch"], "jax": ["jax", "flax", "optax"]}.get(backend)
    if backend.startswith("keras"):
        engine = backend.partition(":")[2] or "tensorflow"
        names = ["keras", engine]
    return all(importlib.util.find_spec(n) is not None for n in names or [backend])


def runners_for(backends: list[str], lightning: bool) -> list[str]:
    """crosstrain and native runners for each backend, plus Lightning next to torch."""
    runners: list[str] = []
    for backend in backends:
        runners += [f"native:{backend}", f"crosstrain:{backend}"]
        if backend == "torch" and lightning and importlib.util.find_spec("lightning"):
            runners += ["lightning:lean", "lightning:defaults"]
    return runners


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps every framework's intra-op threads at `threads`."""
    n = str(threads)
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": n,
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={n}",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONWARNINGS": "ignore",
    }


def launch(
    config: dict[str, Any],
    env: dict[str, str],
    timeout: float,
    worker: tuple[str, ...] = ("benchmarks.worker",),
) -> dict[str, Any]:
    """One configuration in a fresh Python process (`python -m WORKER... CONFIG_JSON`); the last
    JSON line it prints, or `error` with the reason."""
    command = [sys.executable, "-m", *worker, json.dumps(config)]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            cwd=ROOT,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {**config, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {**config, "error": f"exit {done.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, runner): µs/step, ratio to its native, first step, peak RSS."""
    by_key: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for run in runs:
        if "error" not in run:
            by_key.setdefault((run["task"], run["runner"]), {})[run["repeat"]] = run
    rows = []
    for (task, runner), repeats in by_key.items():
        row: dict[str, Any] = {"task": task, "runner": runner, "repeats": len(repeats)}
        row["us_per_step"] = _spread([r["us_per_step"] for r in repeats.values()])
        row["cpu_us_per_step"] = _spread([r["cpu_us_per_step"] for r in repeats.values()])
        row["ttfs_s"] = _spread([r["ttfs_s"] for r in repeats.values()])
        row["peak_rss_mb"] = _spread([r["peak_rss_mb"] for r in repeats.values()])
        row["final_loss"] = statistics.median(r["final_loss"] for r in repeats.values())
        base = baseline(runner)
        natives = by_key.get((task, base or ""), {})
        row["baseline"] = base
        for key, field in (("ratio", "us_per_step"), ("cpu_ratio", "cpu_us_per_step")):
            ratios = [run[field] / natives[k][field] for k, run in repeats.items() if k in natives]
            row[key] = _spread(ratios) if ratios else None
        rss = [
            run["peak_rss_mb"] / natives[k]["peak_rss_mb"]
            for k, run in repeats.items()
            if k in natives
        ]
        row["rss_ratio"] = statistics.median(rss) if rss else None
        row["target"] = target(task, runner)
        rows.append(row)
    return rows


def measure_startup(repeats: int) -> dict[str, Any]:
    """`import crosstrain` time and the frameworks it loads; `crosstrain --help` wall time."""
    probe = (
        "import sys, time, json; t = time.perf_counter(); import crosstrain; "
        "dt = time.perf_counter() - t; "
        f"print(json.dumps({{'s': dt, 'loaded': [m for m in {FRAMEWORKS!r} if m in sys.modules]}}))"
    )
    imports, loaded, helps = [], set(), []
    script = shutil.which("crosstrain", path=str(Path(sys.executable).parent)) or "crosstrain"
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        imports.append(result["s"])
        loaded.update(result["loaded"])
        start = time.perf_counter()
        subprocess.run([script, "--help"], capture_output=True, cwd=ROOT, check=True)
        helps.append(time.perf_counter() - start)
    return {
        "import_s": _spread(imports),
        "import_target_s": IMPORT_TARGET_S,
        "frameworks_loaded_by_import": sorted(loaded),
        "help_s": _spread(helps),
    }


def machine() -> dict[str, Any]:
    """Where the numbers come from, and how busy the machine was."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("crosstrain", "torch", "jax", "flax", "optax", "keras", "tensorflow", "lightning"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
        "versions": versions,
    }


def run_all(
    tasks: list[str],
    backends: list[str],
    repeats: int,
    steps: int | None,
    epochs: int | None,
    threads: int,
    lightning: bool = True,
    timeout: float = 600,
    log: Any = print,
) -> dict[str, Any]:
    """Every configuration `repeats` times, interleaved; the raw runs and their summary."""
    runners = runners_for([b for b in backends if available(b)], lightning)
    pairs = [(task, runner) for task in tasks for runner in runners]
    env = thread_env(threads)
    load_before = list(os.getloadavg())
    runs = []
    for repeat in range(repeats):
        shift = (repeat * max(1, len(pairs) // repeats)) % len(pairs)
        for task, runner in pairs[shift:] + pairs[:shift]:
            config = {"task": task, "runner": runner, "repeat": repeat}
            config.update({k: v for k, v in (("steps", steps), ("epochs", epochs)) if v})
            run = launch(config, env, timeout)
            run["repeat"] = repeat
            runs.append(run)
            shown = run.get("error") or (
                f"{run['us_per_step']:.1f} µs/step, {run['cpu_us_per_step']:.1f} CPU µs/step"
            )
            log(f"[{repeat + 1}/{repeats}] {task} {runner:<22} {shown}")
    return {
        "machine": {**machine(), "load_average_before": load_before},
        "settings": {
            "tasks": tasks,
            "backends": backends,
            "repeats": repeats,
            "steps": steps,
            "epochs": epochs,
            "threads": threads,
        },
        "runs": runs,
        "rows": summarise(runs),
    }
