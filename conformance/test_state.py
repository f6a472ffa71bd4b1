"""Canonical state: get → set → get is identical and training goes on bit-exactly; a state
written by the reference backend loads into the backend under test with the same forward and
the same next update, and back."""

from __future__ import annotations

from typing import Any

import pytest
from crosstrain.checkpoint.format import CanonicalState
from crosstrain.conformance.assertions import assert_all_close, assert_close
from crosstrain.conformance.data import extended, normal, spec

MODELS = {
    "mlp": ([{"type": "Dense", "units": 8}, {"type": "Tanh"}, {"type": "Dense", "units": 3}], (6,)),
    "cnn": (
        [
            {"type": "Conv2D", "filters": 3, "kernel_size": 3, "use_bias": False},
            {"type": "BatchNorm"},
            {"type": "ReLU"},
            {"type": "Flatten"},
            {"type": "Dense", "units": 3},
        ],
        (5, 5, 2),
    ),
}
COMBINATIONS = [("mlp", "sgd"), extended("mlp", "adam"), extended("cnn", "sgd"), ("cnn", "adam")]


def _spec(model: str, optimizer: str) -> dict[str, Any]:
    layers, shape = MODELS[model]
    options = {"name": optimizer, "lr": 0.05}
    if optimizer == "sgd":
        options["momentum"] = 0.9
    return spec(layers, shape, optimizer=options)


def _batch(model: str, seed: int) -> tuple:
    shape = MODELS[model][1]
    return normal((4, *shape), seed=seed), normal((4, 3), seed=seed + 100)


def _trained(target: Any, data: dict[str, Any], model: str, steps: int = 2) -> Any:
    target.require_spec(data)
    program = target.build(data, total_steps=10)
    for step in range(steps):
        program.train_step(_batch(model, step))
    return program


def _copy(state: CanonicalState) -> CanonicalState:
    return CanonicalState(
        {k: v.copy() for k, v in state.params.items()},
        {k: v.copy() for k, v in state.optimizer.items()},
        int(state.step),
        {k: v.copy() for k, v in state.rng.items()},
    )


def _same_state(a: CanonicalState, b: CanonicalState, kind: str) -> None:
    assert_all_close(a.params, b.params, kind, "parameter")
    assert_all_close(a.optimizer, b.optimizer, kind, "optimizer slot")
    assert int(a.step) == int(b.step)


@pytest.mark.parametrize(("model", "optimizer"), COMBINATIONS)
def test_round_trip_is_identical(ct_target, model, optimizer):
    data = _spec(model, optimizer)
    first = _trained(ct_target, data, model)
    state = _copy(first.get_state())
    second = ct_target.build(data, total_steps=10)
    second.set_state(_copy(state))
    _same_state(second.get_state(), state, "exact")
    batch = _batch(model, 7)
    first.train_step(batch)
    second.train_step(batch)
    _same_state(second.get_state(), first.get_state(), "exact")


@pytest.mark.parametrize(("model", "optimizer"), COMBINATIONS)
@pytest.mark.parametrize("direction", ["reference-to-backend", "backend-to-reference"])
def test_cross_backend_exchange(ct_target, ct_reference, model, optimizer, direction):
    data = _spec(model, optimizer)
    ct_target.require_spec(data)
    ct_reference.require_spec(data)
    source, sink = (
        (ct_reference, ct_target)
        if direction == "reference-to-backend"
        else (ct_target, ct_reference)
    )
    trained = _trained(source, data, model)
    state = _copy(trained.get_state())
    loaded = sink.build(data, total_steps=10)
    loaded.set_state(CanonicalState(state.params, state.optimizer, state.step, {}))
    assert_all_close(loaded.get_state().params, state.params, "exact", "loaded parameter")
    x = _batch(model, 5)[0]
    assert_close(loaded.predict_step((x, None)), trained.predict_step((x, None)), "32", "forward")
    batch = _batch(model, 8)
    trained.train_step(batch)
    loaded.train_step(batch)
    assert_all_close(
        loaded.get_state().params,
        trained.get_state().params,
        "training",
        "parameter after one more step",
    )
