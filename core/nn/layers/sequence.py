"""Layers of sequence models: PositionEmbedding, RMSNorm, GatedMLP (Llama's feed-forward)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from crosstrain.nn.initializers import InitializerOption
from crosstrain.nn.layers._base import Layer, ParamSpec, Shape, activate
from pydantic import Field, PositiveInt


class PositionEmbedding(Layer):
    """A learned embedding per position (KerasHub's `PositionEmbedding`): on `(sequence,
    features)` it returns `embeddings[:sequence]` broadcast to the input's shape, not added to
    it. Add it to the token embeddings with a graph `Add` node, or in a chain with
    `{type: Residual, layers: [{type: PositionEmbedding, sequence_length: N}]}`.

    Parameter `embeddings (sequence_length, features)`; inputs may be shorter than
    `sequence_length` (the first rows are used).
    """

    positional: ClassVar = ("sequence_length",)
    type: Literal["PositionEmbedding"] = "PositionEmbedding"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "PositionEmbedding", "sequence_length": 6}, "input_shape": [4, 3]}
    ]
    sequence_length: PositiveInt
    embeddings_initializer: InitializerOption = None

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2:
            raise ValueError(f"PositionEmbedding expects (sequence, features), got {input_shape}")
        if input_shape[0] > self.sequence_length:
            raise ValueError(
                f"a sequence of {input_shape[0]} is longer than sequence_length "
                f"{self.sequence_length}"
            )
        return tuple(input_shape)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        shape = (self.sequence_length, input_shape[-1])
        init = self.initializer("embeddings_initializer", "glorot_uniform")
        return {"embeddings": ParamSpec(shape, init, shape)}

    def forward(self, xp, params, x, training=False, rng=None):
        table = params["embeddings"][: x.shape[1], :]
        return xp.broadcast_to(table[None, ...], x.shape)


class RMSNorm(Layer):
    """`x / sqrt(mean(x**2, last axis) + epsilon) * scale` (Llama's, Keras's
    `RMSNormalization`); parameter `scale` (ones)."""

    type: Literal["RMSNorm"] = "RMSNorm"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "RMSNorm"}, "input_shape": [3, 6]},
        {"layer": {"type": "RMSNorm", "epsilon": 0.1}, "input_shape": [6]},
    ]
    epsilon: float = Field(1e-6, gt=0.0)
    scale_initializer: InitializerOption = None

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        return {
            "scale": ParamSpec((input_shape[-1],), self.initializer("scale_initializer", "ones"))
        }

    def forward(self, xp, params, x, training=False, rng=None):
        ms = xp.mean(x * x, axis=-1, keepdims=True)
        return x / xp.sqrt(ms + self.epsilon) * params["scale"]


class GatedMLP(Layer):
    """Llama's feed-forward block: `down(activation(gate(x)) * up(x))`, back to the input's
    features.

    Parameters `gate/kernel (features, units)`, `up/kernel (features, units)`,
    `down/kernel (units, features)` and, with `use_bias` (default off, as in Llama), a
    `/bias` for each. `activation`: `silu` (SwiGLU) or `gelu` (exact, GeGLU).
    """

    positional: ClassVar = ("units",)
    type: Literal["GatedMLP"] = "GatedMLP"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "GatedMLP", "units": 8}, "input_shape": [3, 5]},
        {
            "id": "GatedMLP-gelu-bias",
            "layer": {"type": "GatedMLP", "units": 4, "activation": "gelu", "use_bias": True},
            "input_shape": [5],
            "extended": True,
        },
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    units: PositiveInt
    activation: Literal["silu", "gelu"] = "silu"
    use_bias: bool = False
    kernel_initializer: InitializerOption = None
    bias_initializer: InitializerOption = None

    def output_shape(self, input_shape: Shape) -> Shape:
        if not input_shape:
            raise ValueError("GatedMLP needs at least one feature axis")
        return tuple(input_shape)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        features, units = input_shape[-1], self.units
        specs: dict[str, ParamSpec] = {}
        for proj, shape in (
            ("gate", (features, units)),
            ("up", (features, units)),
            ("down", (units, features)),
        ):
            kernel = self.initializer("kernel_initializer", "glorot_uniform")
            specs[f"{proj}/kernel"] = ParamSpec(shape, kernel, shape)
            if self.use_bias:
                bias = self.initializer("bias_initializer", "zeros")
                specs[f"{proj}/bias"] = ParamSpec((shape[1],), bias)
        return specs

    def forward_flops(self, input_shape: Shape) -> int:
        return 2 * math.prod(input_shape[:-1]) * input_shape[-1] * self.units * 3

    def forward(self, xp, params, x, training=False, rng=None):
        def project(name: str, y: np.ndarray) -> np.ndarray:
            y = y @ params[f"{name}/kernel"]
            return y + params[f"{name}/bias"] if self.use_bias else y

        hidden = activate(project("gate", x), self.activation) * project("up", x)
        return project("down", hidden).astype(x.dtype)
