"""Losses and metrics: on the outputs of a bias-free Dense layer, each built-in loss and
metric, and each one a plugin registers (with its `conformance_cases`, see
`conformance/function_cases.py`), reported by `eval_step` equals the array-API function
evaluated in numpy, and the gradient of each loss (through one SGD step) matches finite
differences."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xnp
import numpy as np
import pytest
from crosstrain.conformance.assertions import assert_close
from crosstrain.conformance.data import extended, labels, normal, spec
from crosstrain.conformance.function_cases import case_id, plugin_function_cases
from crosstrain.nn.model import init_params
from crosstrain.plugin.registry import get_registry
from crosstrain.spec.schema import load_spec

BATCH, FEATURES, LR = 6, 5, 0.1


def _targets(kind: str, units: int) -> np.ndarray:
    if kind == "labels":
        return labels(BATCH, units, seed=3)
    if kind == "probabilities":
        raw = np.abs(normal((BATCH, units), seed=3)) + 0.1
        return (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)
    if kind == "binary":
        return (normal((BATCH,), seed=3) > 0).astype(np.float32)
    return normal((BATCH, units), seed=3)


LOSS_CASES = [
    ("cross_entropy", {}, 4, "labels"),
    extended(("cross_entropy", {}, 4, "probabilities")),
    ("cross_entropy", {"label_smoothing": 0.1}, 4, "labels"),
    ("binary_cross_entropy", {}, 1, "binary"),
    ("mse", {}, 3, "values"),
    extended(("mae", {}, 3, "values")),
    ("huber", {"delta": 0.5}, 3, "values"),
]
METRIC_CASES = [
    ("accuracy", {}, 4, "labels", "cross_entropy"),
    extended(("accuracy", {}, 1, "binary", "binary_cross_entropy")),
    ("top_k_accuracy", {"k": 2}, 4, "labels", "cross_entropy"),
    extended(("mse", {}, 3, "values", "mse")),
    ("mae", {}, 3, "values", "mse"),
]


def _case_id(case: Any) -> str:
    case = case.values[0] if hasattr(case, "values") else case
    name, options, _, targets = case[:4]
    return case_id(name, options, targets)


LOSS_CASES += plugin_function_cases("loss")
METRIC_CASES += plugin_function_cases("metric")


def _setup(units: int, loss: Any, metrics: list[Any]) -> tuple[dict, np.ndarray, np.ndarray]:
    data = spec(
        [{"type": "Dense", "units": units, "use_bias": False}],
        (FEATURES,),
        loss=loss,
        metrics=metrics,
        optimizer={"name": "sgd", "lr": LR},
    )
    x = normal((BATCH, FEATURES), seed=2)
    kernel = init_params(load_spec(data).model, 0)["dense_0/kernel"].astype(np.float64)
    return data, x, kernel


def _numpy(name: str, options: dict, table: Any, outputs: np.ndarray, y: np.ndarray) -> float:
    return float(table.get(name)(xnp, outputs, y, **options))


@pytest.mark.parametrize("case", LOSS_CASES, ids=[_case_id(c) for c in LOSS_CASES])
def test_loss_value_and_gradient(ct_target, case):
    name, options, units, kind = case
    data, x, kernel = _setup(units, {"name": name, "options": options}, [])
    ct_target.require_spec(data)
    ct_target.require_optimizer("sgd")
    y = _targets(kind, units)
    table = get_registry().losses
    outputs = x.astype(np.float64) @ kernel
    expected = _numpy(name, options, table, outputs, y)
    program = ct_target.build(data, total_steps=1)
    got = program.metrics_to_host([program.eval_step((x, y))])["loss"]
    assert_close(got, expected, "32", f"{name} value")

    eps, grad_out = 1e-6, np.zeros_like(outputs)
    for index in np.ndindex(outputs.shape):
        shifted = outputs.copy()
        shifted[index] += eps
        up = _numpy(name, options, table, shifted, y)
        shifted[index] -= 2 * eps
        grad_out[index] = (up - _numpy(name, options, table, shifted, y)) / (2 * eps)
    program.train_step((x, y))
    after = program.get_state().params["dense_0/kernel"].astype(np.float64)
    assert_close(
        (kernel - after) / LR, x.astype(np.float64).T @ grad_out, "grad", f"{name} gradient"
    )


@pytest.mark.parametrize("case", METRIC_CASES, ids=[_case_id(c) for c in METRIC_CASES])
def test_metric_value(ct_target, case):
    name, options, units, kind, loss = case
    data, x, kernel = _setup(units, loss, [{"name": name, "options": options}])
    ct_target.require_spec(data)
    y = _targets(kind, units)
    outputs = x.astype(np.float64) @ kernel
    expected = _numpy(name, options, get_registry().metrics, outputs, y)
    program = ct_target.build(data, total_steps=1)
    values = program.metrics_to_host([program.eval_step((x, y))])
    key = f"top_{options['k']}_accuracy" if name == "top_k_accuracy" else name
    assert key in values, f"eval_step reported {sorted(values)}, not {key}"
    assert_close(values[key], expected, "32", f"{name} value")


def test_metrics_are_weighted_by_batch_size(ct_target):
    data, x, kernel = _setup(3, "mse", ["mae"])
    ct_target.require_spec(data)
    y = _targets("values", 3)
    program = ct_target.build(data, total_steps=1)
    outputs = [program.eval_step((x[:4], y[:4])), program.eval_step((x[4:], y[4:]))]
    values = program.metrics_to_host(outputs)
    full = x.astype(np.float64) @ kernel
    assert_close(values["loss"], np.mean((full - y) ** 2), "32", "mse over two batches")
    assert_close(values["mae"], np.mean(np.abs(full - y)), "32", "mae over two batches")
