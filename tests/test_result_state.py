"""`FitResult.state` is built from the program when first read: none held at the end of a fit."""

from __future__ import annotations

import crosstrain as ct
import numpy as np
import pytest

pytest.importorskip("torch")


def test_state_is_built_when_read_and_equals_the_programs() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, 32)
    spec = {
        "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 3}]},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "data": {"batch_size": 8},
        "trainer": {"max_epochs": 1, "progress": False, "loggers": [], "checkpoint": None},
    }
    result = ct.fit(spec, backend="torch", data=(x, y), run_dir=False)
    assert result.__dict__["_state"] is None  # nothing copied at the end of the fit
    eager = result.program.get_state()
    lazy = result.state
    assert lazy is result.state  # built once, then kept
    assert lazy.step == eager.step == 4
    assert set(lazy.optimizer) == set(eager.optimizer) and lazy.optimizer
    for part in ("params", "optimizer"):
        for name, value in getattr(eager, part).items():
            np.testing.assert_array_equal(getattr(lazy, part)[name], value)
