"""LSTM and GRU: a task that needs memory ("did token 3 come before token 5?") is solved on
torch, jax and keras:jax, and jax compiles the recurrence once (a scan), whatever the length."""

from __future__ import annotations

import time

import crosstrain as ct
import numpy as np
import pytest
from conftest import call_in_fresh_python

LENGTH, VOCAB = 10, 8


def memory_task(samples: int, seed: int, length: int = LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Sequences holding one 3 and one 5 among other tokens; the label is whether 3 came first."""
    rng = np.random.default_rng(seed)
    others = np.array([t for t in range(VOCAB) if t not in (3, 5)])
    x = rng.choice(others, size=(samples, length))
    for row in x:
        first, second = rng.choice(length, size=2, replace=False)
        row[first], row[second] = 3, 5
    y = (np.argmax(x == 3, axis=1) < np.argmax(x == 5, axis=1)).astype(np.int64)
    return x.astype(np.int64), y


def memory_spec(kind: str = "LSTM", length: int = LENGTH) -> dict:
    return {
        "name": "memory",
        "seed": 0,
        "data": {"batch_size": 64, "shuffle": True},
        "model": {
            "input_shape": [length],
            "layers": [
                {"type": "Embedding", "vocab_size": VOCAB, "dim": 8},
                {"type": kind, "units": 24},
                {"type": "Dense", "units": 2},
            ],
        },
        "loss": "cross_entropy",
        "metrics": ["accuracy"],
        "optimizer": {"name": "adam", "lr": 0.02},
        "trainer": {"max_epochs": 6, "progress": False, "loggers": [], "checkpoint": None},
    }


def solve_memory(backend: str, kind: str = "LSTM") -> float:
    """Validation accuracy after a short fit."""
    result = ct.fit(
        memory_spec(kind),
        backend=backend,
        data=memory_task(2048, 0),
        val_data=memory_task(512, 1),
        run_dir=False,
    )
    return float(result.metrics["val_accuracy"])


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_lstm_solves_a_memory_task(backend: str) -> None:
    assert solve_memory(backend) >= 0.9


def test_lstm_solves_a_memory_task_on_keras_jax() -> None:
    assert call_in_fresh_python("test_recurrent", "solve_memory", "keras:jax") >= 0.9


def test_gru_solves_a_memory_task() -> None:
    assert solve_memory("torch", "GRU") >= 0.9


def first_step_seconds(length: int) -> float:
    """Build plus the first (compiling) training step of the jax program."""
    spec = ct.load_spec(memory_spec("LSTM", length))
    x, y = memory_task(64, 0, length)
    start = time.perf_counter()
    program = ct.build(spec, backend="jax")
    program.metrics_to_host([program.train_step((x, y))])
    return time.perf_counter() - start


def test_jax_compile_time_does_not_grow_with_length() -> None:
    pytest.importorskip("jax")
    short, long = first_step_seconds(16), first_step_seconds(128)
    print(f"jax build + first step: length 16 {short:.2f} s, length 128 {long:.2f} s")
    assert long < 20.0
    assert long < 2.0 * short + 1.0
