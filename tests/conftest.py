"""Shared fixtures: paths, a subprocess runner for the CLI, small specs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_python(
    code: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Runs `python -c code` in a fresh interpreter (same venv) and returns the finished process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def call_in_fresh_python(module: str, function: str, *args: object) -> object:
    """`function(*args)` of the test module `module` in a fresh interpreter, returning its
    JSON-able result: how a test runs Keras on the engine it names (one engine per process)."""
    code = (
        "import json, sys\n"
        "sys.path.insert(0, 'tests')\n"
        f"from {module} import {function}\n"
        f"print(json.dumps({function}(*{args!r})))"
    )
    done = run_python(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def tiny_spec(**overrides: object) -> dict:
    """A spec that trains in well under a second on random data."""
    spec = {
        "name": "tiny",
        "seed": 0,
        "data": {
            "source": "random:classification",
            "options": {"samples": 256, "features": 8, "classes": 3},
            "validation_split": 0.25,
            "batch_size": 32,
        },
        "model": {
            "input_shape": [8],
            "layers": [
                {"type": "Dense", "units": 16},
                {"type": "ReLU"},
                {"type": "Dense", "units": 3},
            ],
        },
        "loss": "cross_entropy",
        "metrics": ["accuracy"],
        "optimizer": {"name": "adam", "lr": 0.01},
        "trainer": {"max_epochs": 2, "progress": False, "log_every_n_steps": 2},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def tiny() -> dict:
    return tiny_spec()
