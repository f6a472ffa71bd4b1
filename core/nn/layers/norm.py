"""Normalisation layers with Keras semantics: BatchNorm and LayerNorm over the last axis."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from crosstrain.nn.initializers import InitializerOption
from crosstrain.nn.layers._base import Layer, ParamSpec, Shape
from pydantic import Field


class BatchNorm(Layer):
    """Normalises over every axis but the last with batch statistics in training.

    Moving statistics follow Keras: `moving = moving * momentum + batch * (1 - momentum)`,
    with the biased batch variance. Parameters `gamma`, `beta`; state `moving_mean`,
    `moving_variance` (not trainable).
    """

    type: Literal["BatchNorm"] = "BatchNorm"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "BatchNorm"}, "input_shape": [6]}
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    momentum: float = Field(0.99, ge=0.0, lt=1.0)
    epsilon: float = Field(1e-3, gt=0.0)
    gamma_initializer: InitializerOption = None
    beta_initializer: InitializerOption = None

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        c = (input_shape[-1],)
        return {
            "gamma": ParamSpec(c, self.initializer("gamma_initializer", "ones")),
            "beta": ParamSpec(c, self.initializer("beta_initializer", "zeros")),
            "moving_mean": ParamSpec(c, "zeros", trainable=False),
            "moving_variance": ParamSpec(c, "ones", trainable=False),
        }

    def forward(self, xp, params, x, training=False, rng=None):
        if training:
            axes = tuple(range(x.ndim - 1))
            mean, var = x.mean(axis=axes), x.var(axis=axes)
        else:
            mean, var = params["moving_mean"], params["moving_variance"]
        y = (x - mean) / np.sqrt(var + self.epsilon) * params["gamma"] + params["beta"]
        return y.astype(x.dtype)


class LayerNorm(Layer):
    """Normalises each position over its last axis; `gamma`, `beta` of that size."""

    type: Literal["LayerNorm"] = "LayerNorm"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "LayerNorm"}, "input_shape": [3, 6]}
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    epsilon: float = Field(1e-3, gt=0.0)
    gamma_initializer: InitializerOption = None
    beta_initializer: InitializerOption = None

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        c = (input_shape[-1],)
        return {
            "gamma": ParamSpec(c, self.initializer("gamma_initializer", "ones")),
            "beta": ParamSpec(c, self.initializer("beta_initializer", "zeros")),
        }

    def forward(self, xp, params, x, training=False, rng=None):
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + self.epsilon) * params["gamma"] + params["beta"]
        return y.astype(x.dtype)
