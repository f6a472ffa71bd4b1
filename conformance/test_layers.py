"""Layers: each layer alone, built by the backend from the seed, starts from core's initial
values, and its forward pass matches the numpy reference and the reference backend.

Plugin layer types take part like built-ins (their numpy reference comes from the plugin);
see `crosstrain.conformance.data` for how a plugin supplies its cases.
"""

from __future__ import annotations

from typing import Any

import pytest
from crosstrain.conformance.assertions import assert_all_close, assert_close
from crosstrain.conformance.data import LayerCase, as_params, case_layers, inputs, layer_cases, spec
from crosstrain.nn.model import forward, init_params
from crosstrain.spec.schema import load_spec

CASES = layer_cases()
_programs: dict[tuple[str, str], Any] = {}


def _program(target: Any, case: LayerCase) -> Any:
    key = (target.name, case.id)
    if key not in _programs:
        data = _spec(case)
        target.require_spec(data)
        _programs[key] = target.build(data)
    return _programs[key]


def _spec(case: LayerCase) -> dict[str, Any]:
    return spec(case_layers(case), case.input_shape)


def _reference_output(case: LayerCase):
    model = load_spec(_spec(case)).model
    return forward(model, init_params(model, 0), inputs(case))


@pytest.mark.parametrize("case", as_params(CASES))
def test_initial_state_is_cores(ct_target, case):
    program = _program(ct_target, case)
    model = load_spec(_spec(case)).model
    assert_all_close(program.get_state().params, init_params(model, 0), "exact", "parameter")


@pytest.mark.parametrize("case", as_params(CASES))
def test_forward_matches_numpy_reference(ct_target, case):
    program = _program(ct_target, case)
    out = program.predict_step((inputs(case), None))
    assert_close(out, _reference_output(case), "32", f"{case.id} output")


@pytest.mark.parametrize("case", as_params(CASES))
def test_forward_matches_reference_backend(ct_target, ct_reference, case):
    ct_reference.require_spec(_spec(case))
    program = _program(ct_target, case)
    expected = _program(ct_reference, case).predict_step((inputs(case), None))
    assert_close(program.predict_step((inputs(case), None)), expected, "32", f"{case.id} output")


def test_predict_step_contract(ct_target):
    """`predict_step` returns the outputs of every row, given an `(x, y)` or `(x,)` batch, a
    `[x, y]` list (as a DataLoader yields) or the bare input array."""
    case = next(c for c in CASES if c.id == "Dense")
    program, x = _program(ct_target, case), inputs(case)
    expected = program.predict_step((x, None))
    assert expected.shape[0] == len(x) > 1
    for name, batch in {"(x,)": (x,), "[x, y]": [x, None], "bare x": x}.items():
        out = program.predict_step(batch)
        assert out.shape == expected.shape, f"predict_step({name}): shape {out.shape}"
        assert_close(out, expected, "exact", f"predict_step({name})")
