"""Memory-mapped data is never read whole before step 1: a validation split is an index view,
and NaN/Inf are found batch by batch as drawn, naming the row of the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crosstrain as ct
import numpy as np
import pytest
from crosstrain.data.arrays import memory_mapped
from crosstrain.errors import DataError
from crosstrain.spec.resolve import load_data

pytest.importorskip("torch")


def _spec(tmp_path: Path, x: np.ndarray, mmap: bool) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", rng.integers(0, 3, len(x)))
    return {
        "seed": 3,
        "data": {
            "source": f"npy:{tmp_path / 'x.npy'}",
            "options": {"y": str(tmp_path / "y.npy"), "mmap": mmap},
            "validation_split": 0.25,
            "batch_size": 8,
        },
        "model": {"input_shape": [5], "layers": [{"type": "Dense", "units": 3}]},
        "loss": "cross_entropy",
        "optimizer": {"name": "sgd", "lr": 0.1},
        "trainer": {"max_epochs": 2, "progress": False, "loggers": [], "checkpoint": None},
    }


def _x(rows: int = 48) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, 5)).astype(np.float32)


def test_split_of_a_memory_map_is_an_index_view_and_trains_alike(tmp_path: Path) -> None:
    spec = ct.load_spec(_spec(tmp_path, _x(), mmap=True))
    train, val = load_data(spec)
    assert memory_mapped(train.x) and memory_mapped(val.x)  # views of the file, not copies
    assert len(train) == 36 and len(val) == 12 and train.unchecked is not None
    assert sorted(np.concatenate([train.index, val.index]).tolist()) == list(range(48))
    mapped = ct.fit(_spec(tmp_path, _x(), mmap=True), backend="torch", run_dir=False)
    loaded = ct.fit(_spec(tmp_path, _x(), mmap=False), backend="torch", run_dir=False)
    assert mapped.history == loaded.history  # same rows, same order: the same run


def test_non_finite_row_of_a_memory_map_found_when_drawn(tmp_path: Path) -> None:
    x = _x()
    x[29, 2] = np.nan
    spec = _spec(tmp_path, x, mmap=True)
    load_data(ct.load_spec(spec))  # nothing read: no error before training
    with pytest.raises(DataError, match=r"x has a non-finite value \(nan\) in row 29"):
        ct.fit(spec, backend="torch", run_dir=False)
    spec["data"]["options"]["mmap"] = False  # read whole: found up front, same message
    with pytest.raises(DataError, match=r"x has a non-finite value \(nan\) in row 29"):
        load_data(ct.load_spec(spec))
