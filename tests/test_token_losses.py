"""Per-token cross-entropy, accuracy and perplexity (logits (B, T, V), labels (B, T), with
`ignore_index`) equal a plain numpy reference on torch (array API and the fused kernel), jax and
Keras's tensorflow engine."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from conftest import call_in_fresh_python
from crosstrain.nn.losses import cross_entropy
from crosstrain.nn.metrics import accuracy, perplexity

rng = np.random.default_rng(3)
LOGITS = rng.standard_normal((3, 7, 11)).astype(np.float32) * 3
LABELS = rng.integers(0, 11, (3, 7)).astype(np.int64)
LABELS[0, :4] = -100
LABELS[2, 6] = -100
ALL_IGNORED = np.full((3, 7), -100, np.int64)


def reference(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0) -> dict:
    """Token by token in float64: the mean over tokens whose label is not -100."""
    losses, nll, hits = [], [], []
    for row, labels_row in zip(logits.astype(np.float64), labels, strict=True):
        for scores, label in zip(row, labels_row, strict=True):
            if label == -100:
                continue
            logp = scores - scores.max() - math.log(np.exp(scores - scores.max()).sum())
            losses.append(-(1 - smoothing) * logp[label] - smoothing * logp.mean())
            nll.append(-logp[label])
            hits.append(float(np.argmax(scores) == label))
    loss = float(np.mean(losses)) if losses else 0.0
    ppl = math.exp(float(np.mean(nll))) if nll else 1.0
    return {"loss": loss, "accuracy": float(np.mean(hits)) if hits else 0.0, "ppl": ppl}


def values(xp, logits, labels, smoothing: float = 0.0, loss=None) -> dict:
    loss = loss or functools.partial(cross_entropy, label_smoothing=smoothing, ignore_index=-100)
    return {
        "loss": float(loss(xp, logits, labels)),
        "accuracy": float(accuracy(xp, logits, labels, ignore_index=-100)),
        "ppl": float(perplexity(xp, logits, labels, ignore_index=-100)),
    }


CASES = [(LABELS, 0.0), (LABELS, 0.1), (ALL_IGNORED, 0.0)]


def check(found: dict, labels: np.ndarray, smoothing: float) -> None:
    expected = reference(LOGITS, labels, smoothing)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


@pytest.mark.parametrize(("labels", "smoothing"), CASES)
def test_numpy_and_jax(labels, smoothing):
    import array_api_compat.numpy as np_xp
    import jax.numpy as jnp

    check(values(np_xp, LOGITS, labels, smoothing), labels, smoothing)
    check(values(jnp, jnp.asarray(LOGITS), jnp.asarray(labels), smoothing), labels, smoothing)


@pytest.mark.parametrize(("labels", "smoothing"), CASES)
def test_torch_array_api_and_fused(labels, smoothing):
    import array_api_compat.torch as xp
    import torch
    from crosstrain.backends.torch.losses import native_loss

    logits, targets = torch.from_numpy(LOGITS), torch.from_numpy(labels)
    check(values(xp, logits, targets, smoothing), labels, smoothing)
    fused = native_loss(
        functools.partial(cross_entropy, label_smoothing=smoothing, ignore_index=-100)
    )
    assert fused is not cross_entropy
    check(values(xp, logits, targets, smoothing, loss=fused), labels, smoothing)


def keras_tensorflow_values(labels: list, smoothing: float) -> dict:
    import os

    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras

    assert keras.backend.backend() == "tensorflow"
    from crosstrain.backends.keras.xp import namespace

    logits = keras.ops.convert_to_tensor(LOGITS)
    targets = keras.ops.convert_to_tensor(np.asarray(labels, np.int64))
    return values(namespace(logits), logits, targets, smoothing)


def test_keras_tensorflow_engine():
    found = call_in_fresh_python(
        "test_token_losses", "keras_tensorflow_values", LABELS.tolist(), 0.1
    )
    check(found, LABELS, 0.1)
