"""More pooling and resizing layers, channels-last: MaxPool1D, AvgPool1D, GlobalMaxPool,
UpSampling2D (Keras's semantics and option names)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from crosstrain.nn.layers._base import Layer, Shape, as_pair, window_output
from crosstrain.nn.layers.spatial import AvgPool2D, MaxPool2D, Padding, SizeOption
from pydantic import PositiveInt


class _Pool1D(Layer):
    positional: ClassVar = ("pool_size",)
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    pool_size: PositiveInt = 2
    strides: PositiveInt | None = None
    padding: Padding = "valid"

    def as_2d(self) -> Layer:
        """The same pooling as a 2-D pool over `(length, 1, channels)`."""
        cls = MaxPool2D if self.type == "MaxPool1D" else AvgPool2D
        strides = self.strides or self.pool_size
        return cls(pool_size=(self.pool_size, 1), strides=(strides, 1), padding=self.padding)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2:
            raise ValueError(f"{self.type} expects (length, channels), got {input_shape}")
        strides = self.strides or self.pool_size
        return (
            window_output(input_shape[0], self.pool_size, strides, self.padding),
            input_shape[1],
        )

    def forward(self, xp, params, x, training=False, rng=None):
        return self.as_2d().forward(np, {}, x[:, :, None, :])[:, :, 0, :]


class MaxPool1D(_Pool1D):
    """Max over windows of `(length, channels)`; `same` padding never picks a padded value."""

    type: Literal["MaxPool1D"] = "MaxPool1D"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "layer": {"type": "MaxPool1D", "pool_size": 3, "strides": 2, "padding": "same"},
            "input_shape": [7, 2],
        }
    ]


class AvgPool1D(_Pool1D):
    """Mean over windows of `(length, channels)`; `same` padding does not count padded cells."""

    type: Literal["AvgPool1D"] = "AvgPool1D"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "layer": {"type": "AvgPool1D", "pool_size": 3, "strides": 2, "padding": "same"},
            "input_shape": [8, 2],
        }
    ]


class GlobalMaxPool(Layer):
    """Max over every axis but the channels: `(H, W, C)` or `(L, C)` to `(C,)`."""

    type: Literal["GlobalMaxPool"] = "GlobalMaxPool"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "GlobalMaxPool"}, "input_shape": [4, 3, 2]}
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 2:
            raise ValueError(f"GlobalMaxPool expects spatial axes and channels, got {input_shape}")
        return (input_shape[-1],)

    def forward(self, xp, params, x, training=False, rng=None):
        return x.max(axis=tuple(range(1, x.ndim - 1)))


class UpSampling2D(Layer):
    """Repeats rows and columns `size` times (Keras's `interpolation="nearest"`)."""

    positional: ClassVar = ("size",)
    type: Literal["UpSampling2D"] = "UpSampling2D"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "UpSampling2D", "size": [2, 3]}, "input_shape": [3, 2, 2]}
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    size: SizeOption = 2

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"UpSampling2D expects (height, width, channels), got {input_shape}")
        sh, sw = as_pair(self.size)
        return (input_shape[0] * sh, input_shape[1] * sw, input_shape[2])

    def forward(self, xp, params, x, training=False, rng=None):
        sh, sw = as_pair(self.size)
        return np.repeat(np.repeat(x, sh, axis=1), sw, axis=2)
