"""Gradients: one plain SGD step (`p1 = p0 - lr * g`) on each layer, followed by a Dense head
and a mean squared error, recovers gradients that match central finite differences of the
numpy reference in float64 (a stricter check than comparing with the reference backend)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from crosstrain.conformance.assertions import assert_all_close, assert_close
from crosstrain.conformance.data import (
    BATCH,
    LayerCase,
    as_params,
    case_layers,
    inputs,
    layer_cases,
    normal,
    spec,
)
from crosstrain.nn.model import forward, init_params, output_shape, param_specs
from crosstrain.spec.schema import load_spec

LR = 0.1
QUICK_SKIP = {"Reshape", "Softmax", "GELU", "GlobalAvgPool"}
"""Types whose backward is plain in every framework: checked only in the full run."""
CASES = [
    replace(c, extended=c.extended or c.type in QUICK_SKIP)
    for c in layer_cases()
    if c.type != "Dropout"
]


def gradient_spec(case: LayerCase) -> dict[str, Any]:
    """`[case layer, (Flatten), Dense(2)]`, with a Dense first when the layer has no parameters."""
    layers = case_layers(case)
    if len(output_shape(load_spec(spec(layers, case.input_shape)).model)) > 1:
        layers.append({"type": "Flatten"})
    layers.append({"type": "Dense", "units": 2})
    return spec(layers, case.input_shape, loss="mse", optimizer={"name": "sgd", "lr": LR})


def _numeric_gradients(case: LayerCase, data: dict[str, Any]) -> tuple[dict, float]:
    model = load_spec(data).model
    trainable = {n for n, s in param_specs(model).items() if s.trainable}
    params = {k: v.astype(np.float64) for k, v in init_params(model, 0).items()}
    x = inputs(case)
    x = x if case.int_inputs is not None else x.astype(np.float64)
    y = normal((BATCH, 2), seed=1).astype(np.float64)

    def loss(values: dict[str, np.ndarray]) -> float:
        out = forward(model, values, x, training=True)
        return float(np.mean((out - y) ** 2))

    grads, eps = {}, 1e-6
    for name in trainable:
        grad = np.zeros_like(params[name])
        flat = params[name].reshape(-1)
        for index in range(flat.size):
            keep = flat[index]
            flat[index] = keep + eps
            up = loss(params)
            flat[index] = keep - eps
            down = loss(params)
            flat[index] = keep
            grad.reshape(-1)[index] = (up - down) / (2 * eps)
        grads[name] = grad
    return grads, loss(params)


_cache: dict[tuple[str, str], tuple[dict, float]] = {}


def _step_gradients(target: Any, case: LayerCase, data: dict[str, Any]) -> tuple[dict, float]:
    target.require_spec(data)
    if (target.name, case.id) not in _cache:
        _cache[target.name, case.id] = _one_step(target, case, data)
    return _cache[target.name, case.id]


def _one_step(target: Any, case: LayerCase, data: dict[str, Any]) -> tuple[dict, float]:
    program = target.build(data, total_steps=1)
    before = program.get_state().params
    out = program.train_step((inputs(case), normal((BATCH, 2), seed=1)))
    loss = program.metrics_to_host([out])["loss"]
    after = program.get_state().params
    trainable = {n for n, s in param_specs(load_spec(data).model).items() if s.trainable}
    grads = {
        n: (before[n].astype(np.float64) - after[n].astype(np.float64)) / LR for n in trainable
    }
    return grads, loss


@pytest.mark.parametrize("case", as_params(CASES))
def test_gradients_match_finite_differences(ct_target, case):
    data = gradient_spec(case)
    grads, loss = _step_gradients(ct_target, case, data)
    expected, expected_loss = _numeric_gradients(case, data)
    assert_close(loss, expected_loss, "32", "training loss before the step")
    assert_all_close(grads, expected, "grad", "gradient of")
