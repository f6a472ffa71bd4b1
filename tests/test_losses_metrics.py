"""Losses and metrics are written once against the array API and agree on numpy, torch and jax."""

from __future__ import annotations

import numpy as np
import pytest
from crosstrain.nn.losses import BUILTIN_LOSSES
from crosstrain.nn.metrics import BUILTIN_METRICS

rng = np.random.default_rng(0)
LOGITS = rng.standard_normal((16, 5)).astype(np.float32)
LABELS = rng.integers(0, 5, 16)
ONE_HOT = np.eye(5, dtype=np.float32)[LABELS]
BINARY_LOGITS = rng.standard_normal((16, 1)).astype(np.float32)
BINARY = rng.integers(0, 2, 16).astype(np.float32)
REGRESSION = rng.standard_normal((16, 1)).astype(np.float32)

CASES = {
    "cross_entropy": (LOGITS, LABELS),
    "cross_entropy/one_hot": (LOGITS, ONE_HOT),
    "binary_cross_entropy": (BINARY_LOGITS, BINARY),
    "mse": (REGRESSION, rng.standard_normal(16).astype(np.float32)),
    "mae": (REGRESSION, rng.standard_normal(16).astype(np.float32)),
    "huber": (REGRESSION * 3, rng.standard_normal(16).astype(np.float32)),
    "accuracy": (LOGITS, LABELS),
    "accuracy/binary": (BINARY_LOGITS, BINARY),
    "top_k_accuracy": (LOGITS, LABELS),
}


def function(case: str):
    name = case.split("/")[0]
    return BUILTIN_LOSSES.get(name) or BUILTIN_METRICS[name]


def on_numpy(case):
    import array_api_compat.numpy as xp

    outputs, targets = CASES[case]
    return float(function(case)(xp, outputs, targets))


def on_torch(case):
    import array_api_compat.torch as xp
    import torch

    outputs, targets = CASES[case]
    return float(function(case)(xp, torch.from_numpy(outputs), torch.from_numpy(targets)))


def on_jax(case):
    import jax.numpy as jnp

    outputs, targets = CASES[case]
    return float(function(case)(jnp, jnp.asarray(outputs), jnp.asarray(targets)))


def test_known_values():
    assert on_numpy("cross_entropy") == pytest.approx(on_numpy("cross_entropy/one_hot"), rel=1e-6)
    logits, labels = CASES["cross_entropy"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = -np.mean(shifted[np.arange(16), labels] - np.log(np.exp(shifted).sum(axis=1)))
    assert on_numpy("cross_entropy") == pytest.approx(expected, rel=1e-6)
    assert on_numpy("accuracy") == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert on_numpy("top_k_accuracy") >= on_numpy("accuracy")
    outputs, targets = CASES["huber"]
    err = np.abs(outputs[:, 0] - targets)
    assert on_numpy("huber") == pytest.approx(
        np.mean(np.where(err < 1, 0.5 * err**2, err - 0.5)), rel=1e-6
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_agrees_with_numpy(case):
    assert on_torch(case) == pytest.approx(on_numpy(case), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_jax_agrees_with_numpy(case):
    assert on_jax(case) == pytest.approx(on_numpy(case), rel=1e-5, abs=1e-6)
