"""Spec validation: a broken spec fails with the field path before the backend builds anything,
and an undeclared request fails as UnsupportedFeature naming the backend and the feature."""

from __future__ import annotations

import pytest
from crosstrain.conformance.data import spec
from crosstrain.errors import SpecError, UnsupportedFeature


def _paths(err: SpecError) -> list[str]:
    return [issue.path for issue in err.issues]


def test_bad_layer_option_names_its_path(ct_target):
    data = spec([{"type": "Dense", "units": 4}, {"type": "Dense", "units": -3}], (3,))
    with pytest.raises(SpecError) as err:
        ct_target.build(data)
    assert "model.layers[1].units" in _paths(err.value)


def test_unknown_layer_type_is_a_spec_error(ct_target):
    with pytest.raises(SpecError) as err:
        ct_target.build(spec([{"type": "Dnese", "units": 4}], (3,)))
    assert any(path.startswith("model.layers[0]") for path in _paths(err.value))
    assert "Dense" in str(err.value)


def test_shapes_that_do_not_fit_are_a_spec_error(ct_target):
    data = spec([{"type": "Reshape", "target_shape": [5]}], (3,))
    with pytest.raises(SpecError) as err:
        ct_target.build(data)
    assert "model.layers[0]" in _paths(err.value)


def test_unknown_loss_is_a_spec_error(ct_target):
    with pytest.raises(SpecError) as err:
        ct_target.build(spec([{"type": "Dense", "units": 2}], (3,), loss="crossentropy"))
    assert "loss" in _paths(err.value)


def test_unsupported_feature_names_backend_and_feature(ct_target):
    ct_target.require_layers({"Dense"})
    data = spec([{"type": "Dense", "units": 2}], (3,), devices=1, strategy="fsdp")
    if "fsdp" in ct_target.caps.strategies:
        pytest.skip(f"{ct_target.name} declares fsdp")
    with pytest.raises(UnsupportedFeature) as err:
        ct_target.build(data)
    assert "fsdp" in str(err.value)
    assert ct_target.name.split(":")[0] in str(err.value)
