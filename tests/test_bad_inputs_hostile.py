"""Issue 25, hostile inputs: each is one `error:` line naming the file or field, never a
traceback, and changes nothing outside `runs/`.

One row per case on the real command line in a fresh working directory (tests/bad_inputs.py).
The table with before/after is docs/hostile-inputs.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import Refusal, assert_refused, run_cli, snapshot
from conftest import tiny_spec

FIT = "fit spec.json --backend torch --no-progress"


def _spec(spec: dict, **files: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(cwd: Path) -> None:
        (cwd / "spec.json").write_text(json.dumps(spec))
        for make_file in files.values():
            make_file(cwd)

    return make


def _data_spec(source: str, **data: object) -> dict:
    return tiny_spec(data={"source": source, "batch_size": 16, **data})


def _npy(name: str, array: np.ndarray) -> Callable[[Path], None]:
    return lambda cwd: np.save(cwd / name, array)


def _npz(name: str, **arrays: np.ndarray) -> Callable[[Path], None]:
    return lambda cwd: np.savez(cwd / name, **arrays)


def _bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda cwd: (cwd / name).write_bytes(data)


X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
Y = np.arange(64) % 3

CASES = [
    pytest.param(
        _spec(tiny_spec()),
        "config spec.json --set model.layers[0].type=[Dense]",
        Refusal(fragments=("model.layers[0]: unknown layer type ['Dense']",)),
        id="layer_type_not_a_string",
    ),
    pytest.param(
        _spec(tiny_spec()),
        "config spec.json --set model.layers[0]={type: {a: 1}}",
        Refusal(fragments=("model.layers[0]",)),
        id="layer_type_a_mapping",
    ),
]


@pytest.mark.parametrize(("setup", "line", "expected"), CASES)
def test_refused(setup: Callable[[Path], None], line: str, expected: Refusal, tmp_path: Path):
    setup(tmp_path)
    before = snapshot(tmp_path)
    done = run_cli(line, tmp_path)
    assert_refused(done, expected, before, tmp_path)
