"""JAX backend optimizers: each jitted step equals `crosstrain.nn.optim.reference_step`."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("optax")

import crosstrain as ct
from crosstrain.nn.optim import reference_step

OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.1},
    "sgd_momentum": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "sgd_nesterov_l2": {
        "name": "sgd",
        "lr": 0.1,
        "momentum": 0.8,
        "nesterov": True,
        "weight_decay": 0.01,
    },
    "adam": {"name": "adam", "lr": 0.01},
    "adam_l2_clip": {"name": "adam", "lr": 0.01, "weight_decay": 0.05, "clip_norm": 0.1},
    "adamw": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1, "beta_1": 0.8, "beta_2": 0.99},
    "rmsprop": {"name": "rmsprop", "lr": 0.01},
    "rmsprop_momentum_l2": {
        "name": "rmsprop",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.01,
        "rho": 0.8,
    },
    "lion": {"name": "lion", "lr": 0.01, "weight_decay": 0.1},
    "adagrad": {"name": "adagrad", "lr": 0.1},
    "adadelta": {"name": "adadelta", "lr": 1.0, "weight_decay": 0.01},
    "adafactor": {"name": "adafactor", "lr": 0.1},
}
SCHEDULES = {
    "none": None,
    "cosine_warmup": {"name": "cosine", "warmup_steps": 2, "min_ratio": 0.1},
    "step": {"name": "step", "step_size": 2, "gamma": 0.5},
    "linear": {"name": "linear", "end_ratio": 0.2},
}
TOTAL = 6


def _spec(opt: dict, schedule: dict | None) -> ct.Spec:
    data = {
        "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 3}]},
        "loss": "mse",
        "optimizer": opt,
        "trainer": {"progress": False},
    }
    if schedule:
        data["schedule"] = schedule
    return ct.load_spec(data)


def _grads(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradient of `mean((x @ W + b - y)^2)` in float64."""
    w, b = params["dense_0/kernel"].astype(np.float64), params["dense_0/bias"].astype(np.float64)
    dout = 2.0 * (x @ w + b - y) / y.size
    return {
        "dense_0/kernel": (x.T @ dout).astype(np.float32),
        "dense_0/bias": dout.sum(axis=0).astype(np.float32),
    }


def _atol(value: np.ndarray) -> float:
    """Float32 rounding of the array's largest entry: entries that cancel to near zero keep it."""
    return 1e-6 * float(np.abs(value).max()) + 1e-9


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_steps_match_reference(optimizer: str, schedule: str) -> None:
    spec = _spec(OPTIMIZERS[optimizer], SCHEDULES[schedule])
    program = ct.build(spec, backend="jax", total_steps=TOTAL)
    params = program.get_state().params
    slots: dict[str, dict[str, np.ndarray]] = {}
    rng = np.random.default_rng(0)
    for step in range(3):
        x = rng.normal(size=(8, 4)).astype(np.float32)
        y = rng.normal(size=(8, 3)).astype(np.float32) * 5
        factor = spec.schedule.factor(step, TOTAL) if spec.schedule else 1.0
        params, slots = reference_step(
            spec.optimizer,
            params,
            _grads(params, x.astype(np.float64), y),
            slots,
            step,
            spec.optimizer.lr * factor,
        )
        program.train_step((x, y))
        state = program.get_state()
        assert state.step == step + 1
        for name, value in params.items():
            np.testing.assert_allclose(
                state.params[name],
                value,
                rtol=1e-5,
                atol=_atol(value),
                err_msg=f"step {step}: {name}",
            )
        for slot, values in slots.items():
            for name, value in values.items():
                np.testing.assert_allclose(
                    state.optimizer[f"{slot}/{name}"],
                    value,
                    rtol=1e-5,
                    atol=_atol(value),
                    err_msg=f"step {step}: {slot}/{name}",
                )
        assert {k.split("/")[0] for k in state.optimizer} == set(slots)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_optimizer_state_round_trips_into_a_fresh_program(optimizer: str) -> None:
    spec = _spec(OPTIMIZERS[optimizer], SCHEDULES["cosine_warmup"])
    rng = np.random.default_rng(1)
    batches = [
        (rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32))
        for _ in range(3)
    ]
    first = ct.build(spec, backend="jax", total_steps=TOTAL)
    for batch in batches[:2]:
        first.train_step(batch)
    second = ct.build(spec, backend="jax", total_steps=TOTAL)
    second.set_state(first.get_state())
    for program in (first, second):
        program.train_step(batches[2])
    a, b = first.get_state(), second.get_state()
    assert a.step == b.step == 3 and a.optimizer.keys() == b.optimizer.keys()
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    for name in a.optimizer:
        np.testing.assert_array_equal(a.optimizer[name], b.optimizer[name])


@pytest.mark.parametrize(
    "schedule",
    [s for s in SCHEDULES.values() if s]
    + [
        {"name": "cosine", "decay_steps": 7, "warmup_steps": 3},
        {"name": "linear_warmup", "warmup_steps": 4},
        {"name": "constant"},
    ],
)
def test_schedule_factor_matches_python(schedule: dict) -> None:
    import jax.numpy as jnp
    from crosstrain.backends.jax.optim import schedule_factor

    spec = _spec(OPTIMIZERS["adam"], schedule)
    factor = schedule_factor(spec.schedule, 20)
    for step in range(30):
        np.testing.assert_allclose(
            float(factor(jnp.asarray(step))),
            spec.schedule.factor(step, 20),
            rtol=1e-5,
            atol=1e-7,
            err_msg=f"step {step}",
        )
