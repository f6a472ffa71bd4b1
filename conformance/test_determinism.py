"""Determinism: two fits of one spec with one seed give identical histories and states on
CPU; another seed gives other initial weights; with shared dropout masks a fit with dropout
ends where the reference backend's does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from crosstrain.conformance.assertions import assert_all_close
from crosstrain.conformance.data import classification, extended, spec

MODELS = {
    "mlp": [{"type": "Dense", "units": 8}, {"type": "ReLU"}, {"type": "Dense", "units": 3}],
    "dropout": [
        {"type": "Dense", "units": 8},
        {"type": "ReLU"},
        {"type": "Dropout", "rate": 0.3},
        {"type": "Dense", "units": 3},
    ],
}


def _spec(target: Any, model: str, seed: int = 0) -> dict[str, Any]:
    optimizer = target.any_optimizer("adam", "sgd", "rmsprop", "adamw")
    data = spec(
        MODELS[model],
        (6,),
        loss="cross_entropy",
        metrics=["accuracy"],
        optimizer={"name": optimizer, "lr": 0.01},
        seed=seed,
        max_epochs=2,
        log_every_n_steps=2,
    )
    data["data"] = {"batch_size": 16, "validation_split": 0.25}
    target.require_spec(data)
    return data


@pytest.mark.parametrize("model", [extended("mlp"), "dropout"])
def test_same_seed_same_run(ct_target, model):
    data = _spec(ct_target, model)
    first = ct_target.fit(data, classification())
    second = ct_target.fit(data, classification())
    assert first.history == second.history
    assert_all_close(second.state.params, first.state.params, "exact", "parameter")
    assert_all_close(second.state.optimizer, first.state.optimizer, "exact", "optimizer slot")


def test_other_seed_other_weights(ct_target):
    data = _spec(ct_target, "mlp")
    a = ct_target.build(data).get_state().params
    b = ct_target.build(_spec(ct_target, "mlp", seed=1)).get_state().params
    assert not np.array_equal(a["dense_0/kernel"], b["dense_0/kernel"])


def test_shared_dropout_masks_match_the_reference_backend(ct_target, ct_reference):
    """`model.dropout_masks: shared`: the backend draws `crosstrain.nn.dropout`'s masks, so a
    fit with dropout ends where the reference backend's does (native masks would not)."""
    data = _spec(ct_target, "dropout")
    data["model"]["dropout_masks"] = "shared"
    ct_target.require_spec(data)
    ct_reference.require_spec(data)
    ours = ct_target.fit(data, classification())
    theirs = ct_reference.fit(data, classification())
    assert int(ours.state.step) == int(theirs.state.step)
    assert_all_close(ours.state.params, theirs.state.params, "training", "parameter")
