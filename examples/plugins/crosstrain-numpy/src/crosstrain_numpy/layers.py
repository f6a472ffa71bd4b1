"""Forward and hand-written backward passes of the layers and losses the backend declares.

A layer object keeps what its backward needs from the last training forward (`cache`). Every
array is float32 except the loss arithmetic, which follows the inputs' dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import erf

Grads = dict[str, np.ndarray]


def activation_forward(name: str | None, z: np.ndarray) -> np.ndarray:
    if name in (None, "linear"):
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "gelu":
        return (0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))).astype(z.dtype)
    shifted = np.exp(z - z.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def activation_backward(
    name: str | None, z: np.ndarray, y: np.ndarray, g: np.ndarray
) -> np.ndarray:
    """Gradient wrt the pre-activation `z`, given the output `y` and the output gradient `g`."""
    if name in (None, "linear"):
        return g
    if name == "relu":
        return g * (z > 0)
    if name == "tanh":
        return g * (1.0 - y * y)
    if name == "sigmoid":
        return g * y * (1.0 - y)
    if name == "gelu":
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        cdf = 0.5 * (1.0 + erf(z / math.sqrt(2.0)))
        return (g * (cdf + z * pdf)).astype(z.dtype)
    return y * (g - np.sum(g * y, axis=-1, keepdims=True))


class Dense:
    """`activation(x @ kernel + bias)` over the last axis."""

    def __init__(self, name: str, layer: Any):
        self.name, self.activation, self.use_bias = name, layer.activation, layer.use_bias
        self.cache: tuple[np.ndarray, ...] = ()

    def forward(self, params: dict[str, np.ndarray], x: np.ndarray, training: bool) -> np.ndarray:
        z = x @ params[f"{self.name}/kernel"]
        if self.use_bias:
            z = z + params[f"{self.name}/bias"]
        y = activation_forward(self.activation, z)
        if training:
            self.cache = (x, z, y)
        return y

    def backward(self, params: dict[str, np.ndarray], g: np.ndarray, grads: Grads) -> np.ndarray:
        x, z, y = self.cache
        g = activation_backward(self.activation, z, y, g)
        flat_x, flat_g = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
        grads[f"{self.name}/kernel"] = flat_x.T @ flat_g
        if self.use_bias:
            grads[f"{self.name}/bias"] = flat_g.sum(axis=0)
        return g @ params[f"{self.name}/kernel"].T


class Activation:
    """ReLU or Tanh as a layer of its own."""

    def __init__(self, name: str, activation: str):
        self.name, self.activation = name, activation
        self.cache: tuple[np.ndarray, ...] = ()

    def forward(self, params: dict[str, np.ndarray], x: np.ndarray, training: bool) -> np.ndarray:
        y = activation_forward(self.activation, x)
        if training:
            self.cache = (x, y)
        return y

    def backward(self, params: dict[str, np.ndarray], g: np.ndarray, grads: Grads) -> np.ndarray:
        x, y = self.cache
        return activation_backward(self.activation, x, y, g)


def make_layer(name: str, layer: Any) -> Dense | Activation:
    """The numpy layer for a declared layer type."""
    if layer.type == "Dense":
        return Dense(name, layer)
    return Activation(name, {"ReLU": "relu", "Tanh": "tanh"}[layer.type])


def loss_gradient(name: str, options: dict[str, Any], out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d loss / d outputs of the declared losses (`cross_entropy` from logits, `mse`)."""
    if name == "mse":
        target = y.astype(out.dtype).reshape(out.shape)
        return (2.0 * (out - target) / out.size).astype(out.dtype)
    classes = out.shape[-1]
    if np.issubdtype(y.dtype, np.integer):
        probs = np.eye(classes, dtype=out.dtype)[y.reshape(-1)].reshape(out.shape)
    else:
        probs = y.astype(out.dtype)
    smoothing = options.get("label_smoothing", 0.0)
    if smoothing:
        probs = probs * (1.0 - smoothing) + smoothing / classes
    softmax = activation_forward("softmax", out)
    rows = out.size // classes
    return ((softmax * probs.sum(axis=-1, keepdims=True) - probs) / rows).astype(out.dtype)
