"""Precision modes: every declared precision trains without non-finite values and its forward
stays within that precision's tolerance of the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from crosstrain.conformance.assertions import assert_close, assert_finite
from crosstrain.conformance.data import normal, spec
from crosstrain.nn.model import forward, init_params
from crosstrain.spec.schema import load_spec

PRECISIONS = ["32", "64", "16-mixed", "bf16-mixed", "bf16-true"]
LAYERS = [{"type": "Dense", "units": 8}, {"type": "Tanh"}, {"type": "Dense", "units": 3}]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_forward_and_step(ct_target, precision):
    ct_target.require_precision(precision)
    data = spec(
        LAYERS,
        (6,),
        precision=precision,
        optimizer={"name": ct_target.any_optimizer("sgd", "adam"), "lr": 0.01},
    )
    ct_target.require_spec(data)
    program = ct_target.build(data, total_steps=2)
    x = normal((4, 6), seed=4)
    model = load_spec(data).model
    if precision == "64":
        params = {k: v.astype(np.float64) for k, v in init_params(model, 0).items()}
        expected = forward(model, params, x.astype(np.float64))
    else:
        expected = forward(model, init_params(model, 0), x)
    assert_close(program.predict_step((x, None)), expected, precision, f"forward in {precision}")
    out = program.train_step((x, normal((4, 3), seed=5)))
    assert_finite(program.metrics_to_host([out])["loss"], "training loss")
    for name, value in program.get_state().params.items():
        assert value.dtype == np.float32 or precision == "64", (
            f"{name} is {value.dtype} in the canonical state"
        )
