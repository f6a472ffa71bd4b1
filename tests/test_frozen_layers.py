"""`trainable: false` on a layer: its parameters get no gradient, no optimizer update and no
optimizer slots on every backend, and stay in the checkpoint and the canonical state."""

from __future__ import annotations

import crosstrain as ct
import numpy as np
import pytest
from crosstrain.checkpoint.format import latest_checkpoint, read_checkpoint
from crosstrain.nn.model import count_params, init_params

FROZEN = {"dense_0/kernel", "dense_0/bias", "residual_2/dense_0/kernel", "residual_2/dense_0/bias"}


def _spec() -> dict:
    return {
        "seed": 3,
        "model": {
            "input_shape": [6],
            "layers": [
                {"type": "Dense", "units": 8, "trainable": False},
                {"type": "ReLU"},
                {"type": "Residual", "trainable": False, "layers": [{"type": "Dense", "units": 8}]},
                {"type": "Dense", "units": 3},
            ],
        },
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.05},
        "data": {"batch_size": 8},
        "trainer": {"max_epochs": 2, "progress": False, "loggers": []},
    }


@pytest.mark.parametrize("backend", ["torch", "jax", "keras"])
def test_frozen_parameters_stay_bit_equal_and_are_checkpointed(backend, tmp_path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)).astype(np.float32), rng.integers(0, 3, 32)
    spec = ct.load_spec(_spec())
    initial = init_params(spec.model, spec.seed)
    assert count_params(spec.model) == (27, 128)
    result = ct.fit(spec, backend=backend, data=(x, y), run_dir=tmp_path)
    state = result.state
    assert state.params.keys() == initial.keys()
    for name, value in initial.items():
        if name in FROZEN:
            np.testing.assert_array_equal(state.params[name], value, err_msg=name)
        else:
            assert np.abs(state.params[name] - value).max() > 1e-3, name
    slotted = {name.split("/", 1)[1] for name in state.optimizer}
    assert slotted == {"dense_3/kernel", "dense_3/bias"}, slotted
    saved, _ = read_checkpoint(latest_checkpoint(result.run_dir / "checkpoints"))
    assert saved.params.keys() >= FROZEN
    for name in FROZEN:
        np.testing.assert_array_equal(saved.params[name], initial[name])


@pytest.mark.parametrize("backend", ["torch", "jax", "keras"])
def test_a_frozen_graph_node_and_given_weights(backend, tmp_path) -> None:
    nodes = [
        {
            "name": "a",
            "type": "Dense",
            "units": 8,
            "trainable": False,
            "kernel_initializer": "he_normal",
        },
        {"name": "b", "type": "Dense", "units": 8, "inputs": "input"},
        {"name": "s", "type": "Add", "inputs": ["a", "b"]},
        {"name": "head", "type": "Dense", "units": 3},
    ]
    spec = ct.load_spec({**_spec(), "model": {"input_shape": [6], "nodes": nodes}})
    given = {k: v * 0.5 for k, v in init_params(spec.model, 11).items()}
    np.savez(tmp_path / "w.npz", **given)
    spec = spec.override({"model.weights": str(tmp_path / "w.npz")})
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)).astype(np.float32), rng.integers(0, 3, 32)
    state = ct.fit(spec, backend=backend, data=(x, y), run_dir=False).state
    for name, value in given.items():
        if name.startswith("a/"):
            np.testing.assert_array_equal(state.params[name], value, err_msg=name)
        else:
            assert np.abs(state.params[name] - value).max() > 1e-3, name
    assert {n.split("/", 1)[1] for n in state.optimizer} == {
        "b/kernel",
        "b/bias",
        "head/kernel",
        "head/bias",
    }
