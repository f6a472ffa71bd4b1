"""Layers without spatial structure: Dense, Embedding, Dropout, Flatten, Reshape, activations."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from crosstrain.nn.initializers import InitializerOption
from crosstrain.nn.layers._base import Activation, Layer, ParamSpec, Shape, activate
from pydantic import Field, PositiveInt, model_validator


class Dense(Layer):
    """`y = activation(x @ kernel + bias)` on the last axis. Kernel `(in, out)`."""

    positional: ClassVar = ("units",)
    type: Literal["Dense"] = "Dense"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"id": "Dense", "layer": {"type": "Dense", "units": 4}, "input_shape": [6]},
        {
            "id": "Dense-gelu-nobias",
            "layer": {"type": "Dense", "units": 4, "activation": "gelu", "use_bias": False},
            "input_shape": [3, 5],
            "extended": True,
        },
        {
            "id": "Dense-tanh",
            "layer": {"type": "Dense", "units": 4, "activation": "tanh"},
            "input_shape": [6],
        },
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    units: PositiveInt
    activation: Activation | None = None
    use_bias: bool = True
    kernel_initializer: InitializerOption = None
    bias_initializer: InitializerOption = None

    def output_shape(self, input_shape: Shape) -> Shape:
        if not input_shape:
            raise ValueError("Dense needs at least one feature axis")
        return (*input_shape[:-1], self.units)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        fan_in = input_shape[-1]
        kernel = self.initializer("kernel_initializer", "glorot_uniform")
        specs = {"kernel": ParamSpec((fan_in, self.units), kernel, (fan_in, self.units))}
        if self.use_bias:
            specs["bias"] = ParamSpec((self.units,), self.initializer("bias_initializer", "zeros"))
        return specs

    def forward_flops(self, input_shape: Shape) -> int:
        return 2 * math.prod(input_shape[:-1]) * input_shape[-1] * self.units

    def forward(self, xp, params, x, training=False, rng=None):
        y = x @ params["kernel"]
        if self.use_bias:
            y = y + params["bias"]
        return activate(y, self.activation)


class Embedding(Layer):
    """Integer ids `(..., )` to vectors `(..., dim)`. Table `(vocab_size, dim)`."""

    positional: ClassVar = ("vocab_size", "dim")
    type: Literal["Embedding"] = "Embedding"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "layer": {"type": "Embedding", "vocab_size": 10, "dim": 4},
            "input_shape": [5],
            "int_inputs": 10,
        }
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    vocab_size: PositiveInt
    dim: PositiveInt
    embeddings_initializer: InitializerOption = None

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape, self.dim)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        init = self.initializer("embeddings_initializer", "uniform_0.05")
        return {"embeddings": ParamSpec((self.vocab_size, self.dim), init)}

    def forward(self, xp, params, x, training=False, rng=None):
        return params["embeddings"][x.astype(np.int64)]


class Dropout(Layer):
    """Zeroes a fraction `rate` of activations in training and rescales the rest."""

    positional: ClassVar = ("rate",)
    type: Literal["Dropout"] = "Dropout"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "Dropout", "rate": 0.5}, "input_shape": [6]}
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    rate: float = Field(ge=0.0, lt=1.0)

    def forward(self, xp, params, x, training=False, rng=None):
        if not training or self.rate == 0.0:
            return x
        if rng is None:
            raise ValueError("Dropout in training needs an rng")
        keep = rng.random(x.shape) >= self.rate
        return np.where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype)


class Flatten(Layer):
    """Collapses every per-sample axis into one."""

    type: Literal["Flatten"] = "Flatten"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "Flatten"}, "input_shape": [3, 2, 2], "extended": True}
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def forward(self, xp, params, x, training=False, rng=None):
        return x.reshape(x.shape[0], -1)


class Reshape(Layer):
    """Reshapes each sample to `target_shape` (one entry may be -1)."""

    positional: ClassVar = ("target_shape",)
    type: Literal["Reshape"] = "Reshape"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "Reshape", "target_shape": [4, -1]}, "input_shape": [8]}
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    target_shape: tuple[int, ...]

    @model_validator(mode="after")
    def _one_unknown(self) -> Reshape:
        if sum(d == -1 for d in self.target_shape) > 1 or any(
            d == 0 or d < -1 for d in self.target_shape
        ):
            raise ValueError("target_shape needs positive sizes and at most one -1")
        return self

    def output_shape(self, input_shape: Shape) -> Shape:
        size, known = math.prod(input_shape), math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(f"cannot reshape {input_shape} to {self.target_shape}")
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if known != size:
            raise ValueError(f"cannot reshape {input_shape} ({size} values) to {self.target_shape}")
        return tuple(self.target_shape)

    def forward(self, xp, params, x, training=False, rng=None):
        return x.reshape(x.shape[0], *self.output_shape(x.shape[1:]))


class _Activation(Layer):
    activation: ClassVar[str] = "linear"
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own

    def forward(self, xp, params, x, training=False, rng=None):
        return activate(x, self.activation)


class ReLU(_Activation):
    type: Literal["ReLU"] = "ReLU"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "ReLU"}, "input_shape": [6]}
    ]
    activation: ClassVar[str] = "relu"


class GELU(_Activation):
    """GELU: exact (erf), or with `approximate: true` the tanh form (Keras's `approximate`,
    torch's `approximate="tanh"`, GPT-2's `gelu_new`)."""

    type: Literal["GELU"] = "GELU"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "GELU"}, "input_shape": [6]},
        {
            "id": "GELU-approximate",
            "layer": {"type": "GELU", "approximate": True},
            "input_shape": [6],
        },
    ]
    activation: ClassVar[str] = "gelu"
    approximate: bool = False

    def forward(self, xp, params, x, training=False, rng=None):
        return activate(x, "gelu_tanh" if self.approximate else "gelu")


class SiLU(_Activation):
    """`x * sigmoid(x)` (swish)."""

    type: Literal["SiLU"] = "SiLU"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "SiLU"}, "input_shape": [6]}
    ]
    activation: ClassVar[str] = "silu"


class Tanh(_Activation):
    type: Literal["Tanh"] = "Tanh"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "Tanh"}, "input_shape": [6]}
    ]
    activation: ClassVar[str] = "tanh"


class Sigmoid(_Activation):
    type: Literal["Sigmoid"] = "Sigmoid"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "Sigmoid"}, "input_shape": [6], "extended": True}
    ]
    activation: ClassVar[str] = "sigmoid"


class Softmax(_Activation):
    """Softmax over the last axis."""

    type: Literal["Softmax"] = "Softmax"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "Softmax"}, "input_shape": [6]}
    ]
    activation: ClassVar[str] = "softmax"
