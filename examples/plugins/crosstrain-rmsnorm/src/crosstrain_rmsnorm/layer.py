"""The RMSNorm layer: options, shapes, canonical parameter, numpy reference, and the hooks
through which each backend builds its own implementation."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from crosstrain.layers import Layer, ParamSpec, Shape
from pydantic import Field


class RMSNorm(Layer):
    """`x / sqrt(mean(x**2, last axis) + epsilon) * scale`; parameter `scale` (ones)."""

    type: Literal["RMSNorm"] = "RMSNorm"
    epsilon: float = Field(1e-6, gt=0.0)

    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "RMSNorm"}, "input_shape": [3, 6]},
        {"layer": {"type": "RMSNorm", "epsilon": 0.1}, "input_shape": [6]},
    ]
    """What the conformance suite checks on every backend that declares RMSNorm."""

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        return {"scale": ParamSpec((input_shape[-1],), "ones")}

    def forward(self, params, x, training=False, rng=None):
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(ms + self.epsilon) * params["scale"]).astype(x.dtype)

    def torch_module(self, input_shape: Shape) -> Any:
        """A `torch.nn.Module` with the parameter `scale` (used by the torch backend)."""
        from .torch_impl import TorchRMSNorm

        return TorchRMSNorm(input_shape[-1], self.epsilon)

    def jax_module(self, input_shape: Shape) -> Any:
        """A flax `nnx.Module` with the variable `scale` (used by the jax backend)."""
        from .jax_impl import JaxRMSNorm

        return JaxRMSNorm(input_shape[-1], self.epsilon)

    def keras_layer(self, input_shape: Shape, **options: Any) -> Any:
        """A Keras layer with one weight, `scale` (used by every Keras engine).

        `options` are what the Keras backend gives every layer (`name`, `dtype` policy).
        """
        from .keras_impl import KerasRMSNorm

        return KerasRMSNorm(epsilon=self.epsilon, **options)
