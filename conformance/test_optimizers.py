"""Optimizers and schedules: a few updates of a linear Dense layer under a mean squared error
(whose gradient is exact in closed form) match `crosstrain.nn.optim.reference_step` with the
schedule's `factor`, for parameters and the canonical optimizer slots."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from crosstrain.conformance.assertions import assert_all_close
from crosstrain.conformance.data import extended, normal, spec
from crosstrain.nn.model import init_params
from crosstrain.nn.optim import reference_step
from crosstrain.spec.schema import load_spec

BATCH, FEATURES, UNITS, STEPS = 8, 5, 3, 4

OPTIMIZERS = [
    extended({"name": "sgd", "lr": 0.1}),
    {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    extended({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    {"name": "adam", "lr": 0.01},
    extended({"name": "adam", "lr": 0.01, "weight_decay": 0.01, "beta_2": 0.99}),
    {"name": "adamw", "lr": 0.01},
    extended({"name": "rmsprop", "lr": 0.01}),
    {"name": "rmsprop", "lr": 0.01, "momentum": 0.5},
    {"name": "adam", "lr": 0.01, "clip_norm": 0.05},
    {"name": "lion", "lr": 0.01, "weight_decay": 0.1},
    extended({"name": "adagrad", "lr": 0.1}),
    extended({"name": "adadelta", "lr": 1.0}),
    {"name": "adafactor", "lr": 0.1},
]
SCHEDULES = [
    extended({"name": "constant", "warmup_steps": 2}),
    extended({"name": "linear_warmup", "warmup_steps": 3}),
    {"name": "step", "step_size": 2, "gamma": 0.5},
    {"name": "cosine", "warmup_steps": 1},
    extended({"name": "cosine", "decay_steps": 2, "min_ratio": 0.1}),
    extended({"name": "linear", "end_ratio": 0.1}),
    {"name": "exponential", "end_ratio": 50.0},  # grows: lr-find's sweep
]


def _id(options: Any) -> str:
    options = options if isinstance(options, dict) else options.values[0]
    return "-".join(f"{k}={v}" if k != "name" else str(v) for k, v in options.items())


def _batches() -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (normal((BATCH, FEATURES), seed=10 + i), normal((BATCH, UNITS), seed=20 + i))
        for i in range(STEPS)
    ]


def _expected(data: dict[str, Any]) -> tuple[dict, dict]:
    loaded = load_spec(data)
    params = {k: v.astype(np.float32) for k, v in init_params(loaded.model, 0).items()}
    slots: dict[str, dict[str, np.ndarray]] = {}
    for step, (x, y) in enumerate(_batches()):
        out = x @ params["dense_0/kernel"] + params["dense_0/bias"]
        delta = 2.0 * (out - y) / out.size
        grads = {"dense_0/kernel": x.T @ delta, "dense_0/bias": delta.sum(axis=0)}
        factor = loaded.schedule.factor(step, STEPS) if loaded.schedule else 1.0
        lr = loaded.optimizer.lr * factor
        params, slots = reference_step(loaded.optimizer, params, grads, slots, step, lr)
    flat = {
        f"{slot}/{name}": value for slot, values in slots.items() for name, value in values.items()
    }
    return params, flat


def _run(target: Any, data: dict[str, Any]) -> Any:
    target.require_spec(data)
    program = target.build(data, total_steps=STEPS)
    for batch in _batches():
        program.train_step(batch)
    return program.get_state()


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=[_id(o) for o in OPTIMIZERS])
def test_optimizer_steps_match_reference_step(ct_target, optimizer):
    data = spec([{"type": "Dense", "units": UNITS}], (FEATURES,), optimizer=optimizer)
    state = _run(ct_target, data)
    params, slots = _expected(data)
    assert_all_close(state.params, params, "optimizer", "parameter")
    assert_all_close(state.optimizer, slots, "optimizer", "optimizer slot")
    assert int(state.step) == STEPS


@pytest.mark.parametrize("schedule", SCHEDULES, ids=[_id(s) for s in SCHEDULES])
def test_schedule_steps_match_reference(ct_target, schedule):
    name = ct_target.any_optimizer("sgd", "adam", "rmsprop", "adamw")
    optimizer = {"name": name, "lr": 0.1 if name == "sgd" else 0.01}
    data = spec(
        [{"type": "Dense", "units": UNITS}], (FEATURES,), optimizer=optimizer, schedule=schedule
    )
    state = _run(ct_target, data)
    params, _ = _expected(data)
    assert_all_close(state.params, params, "optimizer", "parameter")
