"""`benchmarks.layers` on one torch layer, one short repeat, so it cannot rot (no timing
assertions: the step runs both sides and the row is finite)."""

from __future__ import annotations

import importlib.util
import math

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="the smoke run uses the torch backend"
)


def test_layers_benchmark_torch_dense_smoke() -> None:
    from benchmarks.layers import CASES, table, time_sides
    from benchmarks.layers_torch import NATIVE, SYNC, steps

    assert set(NATIVE) == set(CASES)
    pair, label = steps("dense")
    row = {"backend": "torch", "layer": "dense", "native": label}
    row.update(time_sides(pair, SYNC, repeats=1, block=0.01))
    assert math.isfinite(row["ratio"]) and row["ratio"] > 0
    assert "| torch | dense |" in table([row])
