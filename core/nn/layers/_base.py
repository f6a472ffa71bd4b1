"""The base of every neutral layer: options (pydantic), shapes, parameters, numpy reference."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Shape = tuple[int, ...]
"""A per-sample shape: the batch axis is never included."""

Activation = Literal["linear", "relu", "gelu", "tanh", "sigmoid", "softmax", "silu"]


@dataclass(frozen=True)
class ParamSpec:
    """One canonical parameter of a layer.

    Attributes:
        shape: canonical layout (Dense kernel `(in, out)`, Conv kernel `HWIO`).
        init: an initialiser name (`glorot_uniform`, `zeros` ..., see
            `crosstrain.nn.initializers`) or an `Initializer`; a layer passes its
            `*_initializer` option through `Layer.initializer`.
        fans: `(fan_in, fan_out)` for the variance-scaling initialisers.
        trainable: False for running statistics such as BatchNorm's moving mean.
    """

    shape: Shape
    init: Any
    fans: tuple[int, int] = (1, 1)
    trainable: bool = True


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field's annotation takes a boolean (bool, Any, a Literal of one, or a union or
    `Annotated` holding one)."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(isinstance(arg, bool) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(_accepts_bool(arg) for arg in typing.get_args(annotation)[:None])
    return origin is None and not isinstance(annotation, type)  # a TypeVar or the like


def _kind(annotation: Any) -> str:
    args = typing.get_args(annotation) or (annotation,)
    numbers = [a for a in args if a in (int, float)]
    return "a number" if numbers else f"a value of {getattr(annotation, '__name__', annotation)}"


class Layer(BaseModel):
    """A neutral layer: validated options plus the math every backend must reproduce.

    Subclasses set `type` to a `Literal` of their own name, list their positional options in
    `positional` (so `Dense(128)` works) and override the methods that apply.

    A layer written once for every backend defines `params` and `forward` against the array
    API: `forward(xp, params, x, training, rng)` with `xp` the namespace of `x` (numpy for the
    reference, torch, jax.numpy or Keras ops inside a backend's compiled step). Each backend
    wraps it in its own module (`backends/<name>/array_layer.py`); a method `torch_module`,
    `jax_module` or `keras_layer` on the class, when present, is used instead (a speed-up).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    positional: ClassVar[tuple[str, ...]] = ()
    array_api: ClassVar[bool] = True
    merge: ClassVar[bool] = False
    """Whether the layer merges several inputs (Add, Concatenate ...; only in a graph)."""
    """Whether `forward` works for any array-API `xp` (False: numpy only, as the built-ins'
    references are; those layers run on a backend only through its own implementation)."""

    conformance_cases: ClassVar[list[dict[str, Any]]] = []
    """What `crosstrain conformance` checks this layer on, each entry `{"layer": {...spec
    data...}, "input_shape": [...]}` plus optionally `"int_inputs": n` (integer ids below n,
    as an Embedding takes), `"id"` (the test id) and `"extended": True` (only in the full run,
    not with `--quick`). Empty: the layer alone, `{type: <name>}`, on inputs of shape (3, 6)."""

    type: str
    name: str | None = None
    trainable: bool | None = Field(
        None,
        description="false: frozen (no gradient, no optimizer update or slots; still in the "
        "checkpoint); a frozen composite freezes its layers",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`rate: false` is no rate: a boolean is refused where the option takes no boolean
        (pydantic would read it as 0 or 1)."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and not _accepts_bool(field.annotation):
            raise ValueError(f"expected {_kind(field.annotation)}, got the boolean {value}")
        return value

    def __init__(self, *args: Any, **options: Any) -> None:
        if len(args) > len(self.positional):
            raise TypeError(
                f"{type(self).__name__} takes at most {len(self.positional)} positional options"
            )
        options.update(zip(self.positional, args, strict=False))
        super().__init__(**options)

    def __call__(self, inputs: Any, *, tie: Layer | None = None) -> Any:
        """In a `Module.forward`: this layer as a graph node on symbolic inputs (a symbol, or a
        list of them for a merge layer), see `crosstrain.nn.functional`; `tie`: a Dense
        projecting with that Embedding layer's table."""
        from crosstrain.nn.functional import Symbol

        first = inputs[0] if isinstance(inputs, (list, tuple)) and inputs else inputs
        if not isinstance(first, Symbol):
            raise TypeError(
                f"{self.type}(...) is called on the outputs of layers or model inputs inside "
                "Module.forward; for arrays use forward(xp, params, x)"
            )
        return first.tracer.call(self, inputs, tie)

    def output_shape(self, input_shape: Shape) -> Shape:
        """The per-sample output shape for a per-sample input shape; raises ValueError if invalid."""
        return input_shape

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        """Canonical parameters of this layer (own ones, not its children's), by name."""
        return {}

    def initializer(self, option: str, default: str) -> Any:
        """The initialiser of a parameter: the layer's `option` (`kernel_initializer` ...)
        when set, else `default` (Keras's default for that parameter)."""
        value = getattr(self, option, None)
        return default if value is None else value

    def children(self) -> list[Layer]:
        """Sub-layers of a composite layer, in order."""
        return []

    def forward(
        self,
        xp: Any,
        params: dict[str, Any],
        x: Any,
        training: bool = False,
        rng: np.random.Generator | None = None,
    ) -> Any:
        """The forward pass of a batch; the numpy reference when `xp` is numpy.

        Args:
            xp: the array namespace of `x` (`numpy` for the reference).
            params: this layer's parameters by canonical name, arrays of `xp`; floating ones
                in the dtype of a floating `x` (so mixed precision computes in `x`'s dtype).
            x: the batch (batch axis first, channels last).
            training: True in a training step.
            rng: a numpy Generator in the numpy reference, None in a backend's step (an
                array-API layer is deterministic; random ones need a native implementation).
        """
        raise NotImplementedError(f"{self.type} has no forward")

    def forward_flops(self, input_shape: Shape) -> int:
        """FLOPs of one forward pass of one sample, its own work only (a composite's children
        are counted by `crosstrain.nn.flops`): 2 per multiply-add of a matrix product; the
        default, 0, leaves out element-wise work as the usual "model FLOPs" figure does."""
        return 0


def activate(x: np.ndarray, activation: str | None) -> np.ndarray:
    """Numpy reference of the named activation."""
    if activation in (None, "linear"):
        return x
    if activation == "relu":
        return np.maximum(x, 0)
    if activation == "gelu":
        from scipy.special import erf

        return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)
    if activation == "gelu_tanh":  # GELU's tanh approximation (GPT-2's gelu_new)
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(x.dtype)
    if activation == "silu":
        return (x / (1.0 + np.exp(-x))).astype(x.dtype)
    if activation == "tanh":
        return np.tanh(x)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if activation == "softmax":
        shifted = np.exp(x - x.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    raise ValueError(f"unknown activation {activation!r}")


def as_pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Keras-style size option: an int means the same on both axes."""
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow/Keras `same` padding: (before, after) for one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def window_output(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a sliding window along one axis."""
    if padding == "same":
        return math.ceil(size / stride)
    if size < kernel:
        raise ValueError(
            f"window {kernel} is larger than the input size {size} with padding 'valid'"
        )
    return (size - kernel) // stride + 1


def transposed_window(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """Keras's Conv2DTranspose along one axis: (output length, rows cropped at the start of the
    full `(size - 1) * stride + kernel` result; the end is cropped, or padded with zeros, to the
    output length). The crop is where the forward `same` convolution would pad."""
    if padding == "same":
        return size * stride, max(kernel - stride, 0) // 2
    return size * stride + max(kernel - stride, 0), 0
