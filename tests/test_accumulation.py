"""Gradient accumulation (`trainer.accumulate_grad_batches`): N micro-batches of B rows give the
same parameters, optimizer state, schedule and metrics as one batch of N×B rows, on every
backend (the Keras engines in fresh interpreters, one engine per process)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import call_in_fresh_python

ROWS, MICRO, N = 90, 8, 4
"""90 rows: batches of 32 are 32, 32, 26; micro-batches of 8 group as 4, 4 and 3 + a 2-row one,
so the last update of each epoch is a stacked group plus a shorter micro-batch."""


def _spec(batch_size: int, accumulate: int, optimizer: str = "adam") -> dict[str, Any]:
    return {
        "seed": 3,
        "data": {"batch_size": batch_size, "shuffle": True, "validation_split": 0.0},
        "model": {
            "input_shape": [6],
            "layers": [
                {"type": "Dense", "units": 16},
                {"type": "Tanh"},
                {"type": "Dense", "units": 3},
            ],
        },
        "loss": "cross_entropy",
        "metrics": ["accuracy"],
        "optimizer": {"name": optimizer, "lr": 0.05, "clip_norm": 1.0},
        "schedule": {"name": "cosine", "warmup_steps": 2},
        "trainer": {
            "max_epochs": 2,
            "accumulate_grad_batches": accumulate,
            "progress": False,
            "loggers": [],
            "checkpoint": None,
            "log_every_n_steps": 1,
        },
    }


def accumulation_pair(backend: str, optimizer: str = "adam") -> dict[str, Any]:
    """Fits accumulate=N × batch B and accumulate=1 × batch N·B; returns both states and
    histories as JSON-able lists (also run in a fresh interpreter for Keras)."""
    import crosstrain as ct

    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=ROWS).astype(np.int64)
    found: dict[str, Any] = {}
    for label, batch, accumulate in (("micro", MICRO, N), ("large", MICRO * N, 1)):
        result = ct.fit(
            _spec(batch, accumulate, optimizer), backend=backend, data=(x, y), run_dir=False
        )
        state = result.state
        found[label] = {
            "params": {k: v.tolist() for k, v in state.params.items()},
            "optimizer": {k: v.tolist() for k, v in state.optimizer.items()},
            "step": int(state.step),
            "history": result.history,
        }
    return found


def _check(found: dict[str, Any]) -> None:
    micro, large = found["micro"], found["large"]
    assert micro["step"] == large["step"] == 6  # 3 optimizer steps an epoch, 2 epochs
    assert [h["step"] for h in micro["history"]] == [3, 6]
    for part in ("params", "optimizer"):
        assert micro[part].keys() == large[part].keys()
        for name in micro[part]:
            np.testing.assert_allclose(
                micro[part][name], large[part][name], rtol=1e-5, atol=1e-7, err_msg=name
            )
    for got, want in zip(micro["history"], large["history"], strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert got["train_accuracy"] == pytest.approx(want["train_accuracy"], rel=1e-6)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_accumulation_equals_the_larger_batch(backend: str) -> None:
    _check(accumulation_pair(backend))


@pytest.mark.parametrize("engine", ["jax", "tensorflow", "torch"])
def test_accumulation_equals_the_larger_batch_on_keras(engine: str) -> None:
    _check(call_in_fresh_python("test_accumulation", "accumulation_pair", f"keras:{engine}"))


def test_accumulation_with_sgd_momentum_on_torch() -> None:
    _check(accumulation_pair("torch", "sgd"))
