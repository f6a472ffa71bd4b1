"""Channels-last spatial layers: Conv1D, Conv2D, Conv2DTranspose, MaxPool2D, AvgPool2D,
GlobalAvgPool."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from crosstrain.nn.initializers import InitializerOption
from crosstrain.nn.layers._base import (
    Activation,
    Layer,
    ParamSpec,
    Shape,
    activate,
    as_pair,
    same_padding,
    transposed_window,
    window_output,
)
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import PositiveInt

Padding = Literal["valid", "same"]
SizeOption = PositiveInt | tuple[PositiveInt, PositiveInt]


def _pad(
    x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...], padding: str, value: float
) -> np.ndarray:
    """Pads the spatial axes (1..n) of a channels-last batch the way Keras's `same` does."""
    if padding == "valid":
        return x
    widths = [(0, 0)]
    widths += [
        same_padding(x.shape[1 + i], k, s)
        for i, (k, s) in enumerate(zip(kernel, strides, strict=True))
    ]
    widths += [(0, 0)]
    return np.pad(x, widths, constant_values=value)


def _windows(x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """`(N, *out, C, *kernel)` view of every window, taken with the given strides."""
    view = sliding_window_view(x, kernel, axis=tuple(range(1, 1 + len(kernel))))
    index = (slice(None),) + tuple(slice(None, None, s) for s in strides)
    return view[index]


def _conv_flops(layer: Conv1D | Conv2D, input_shape: Shape) -> int:
    """2 × (output positions × kernel window × in channels × filters)."""
    kernel = layer.params(input_shape)["kernel"].shape  # (..window.., in, out)
    return 2 * math.prod(layer.output_shape(input_shape)[:-1]) * math.prod(kernel)


class Conv2D(Layer):
    """2-D convolution on `(H, W, C)`. Kernel `HWIO`, Keras `same`/`valid` padding."""

    positional: ClassVar = ("filters", "kernel_size")
    type: Literal["Conv2D"] = "Conv2D"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "id": "Conv2D-valid",
            "layer": {"type": "Conv2D", "filters": 3, "kernel_size": 3},
            "input_shape": [6, 6, 2],
            "extended": True,
        },
        {
            "id": "Conv2D-same-stride2",
            "layer": {
                "type": "Conv2D",
                "filters": 2,
                "kernel_size": 3,
                "strides": 2,
                "padding": "same",
            },
            "input_shape": [5, 5, 2],
        },
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    filters: PositiveInt
    kernel_size: SizeOption
    strides: SizeOption = 1
    padding: Padding = "valid"
    activation: Activation | None = None
    use_bias: bool = True
    kernel_initializer: InitializerOption = None
    bias_initializer: InitializerOption = None

    def _geometry(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return as_pair(self.kernel_size), as_pair(self.strides)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"Conv2D expects (height, width, channels), got {input_shape}")
        (kh, kw), (sh, sw) = self._geometry()
        h = window_output(input_shape[0], kh, sh, self.padding)
        w = window_output(input_shape[1], kw, sw, self.padding)
        return (h, w, self.filters)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        (kh, kw), _ = self._geometry()
        cin = input_shape[-1]
        fans = (kh * kw * cin, kh * kw * self.filters)
        kernel = self.initializer("kernel_initializer", "glorot_uniform")
        specs = {"kernel": ParamSpec((kh, kw, cin, self.filters), kernel, fans)}
        if self.use_bias:
            init = self.initializer("bias_initializer", "zeros")
            specs["bias"] = ParamSpec((self.filters,), init)
        return specs

    def forward_flops(self, input_shape: Shape) -> int:
        return _conv_flops(self, input_shape)

    def forward(self, xp, params, x, training=False, rng=None):
        kernel, strides = self._geometry()
        windows = _windows(_pad(x, kernel, strides, self.padding, 0.0), kernel, strides)
        y = np.einsum("nhwcij,ijco->nhwo", windows, params["kernel"], optimize=True)
        if self.use_bias:
            y = y + params["bias"]
        return activate(y.astype(x.dtype), self.activation)


class Conv2DTranspose(Layer):
    """Transposed 2-D convolution on `(H, W, C)` (Keras's; U-Net decoders). Kernel
    `(kh, kw, filters, in)` as Keras stores it; output `H * strides` with `same` padding,
    `H * strides + max(kernel - strides, 0)` with `valid`."""

    positional: ClassVar = ("filters", "kernel_size")
    type: Literal["Conv2DTranspose"] = "Conv2DTranspose"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "id": "Conv2DTranspose-same-stride2",
            "layer": {
                "type": "Conv2DTranspose",
                "filters": 3,
                "kernel_size": 3,
                "strides": 2,
                "padding": "same",
            },
            "input_shape": [3, 4, 2],
        },
        {
            "id": "Conv2DTranspose-valid",
            "layer": {"type": "Conv2DTranspose", "filters": 2, "kernel_size": [2, 3]},
            "input_shape": [3, 3, 2],
            "extended": True,
        },
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    filters: PositiveInt
    kernel_size: SizeOption
    strides: SizeOption = 1
    padding: Padding = "valid"
    activation: Activation | None = None
    use_bias: bool = True

    def geometry(self, input_shape: Shape) -> list[tuple[int, int, int, int]]:
        """Per spatial axis: (kernel, stride, output length, crop at the start)."""
        kernel, strides = as_pair(self.kernel_size), as_pair(self.strides)
        return [
            (k, s, *transposed_window(size, k, s, self.padding))
            for size, k, s in zip(input_shape[:2], kernel, strides, strict=True)
        ]

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(
                f"Conv2DTranspose expects (height, width, channels), got {input_shape}"
            )
        (_, _, h, _), (_, _, w, _) = self.geometry(input_shape)
        return (h, w, self.filters)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        kh, kw = as_pair(self.kernel_size)
        cin = input_shape[-1]
        fans = (kh * kw * cin, kh * kw * self.filters)
        specs = {"kernel": ParamSpec((kh, kw, self.filters, cin), "glorot_uniform", fans)}
        if self.use_bias:
            specs["bias"] = ParamSpec((self.filters,), "zeros")
        return specs

    def forward_flops(self, input_shape: Shape) -> int:
        return 2 * math.prod(input_shape) * math.prod(as_pair(self.kernel_size)) * self.filters

    def forward(self, xp, params, x, training=False, rng=None):
        (kh, sh, h, ch), (kw, sw, w, cw) = self.geometry(x.shape[1:])
        n, ih, iw, _ = x.shape
        full = np.zeros((n, (ih - 1) * sh + kh, (iw - 1) * sw + kw, self.filters), x.dtype)
        for i in range(kh):
            for j in range(kw):
                tap = np.einsum("nhwc,oc->nhwo", x, params["kernel"][i, j])
                full[:, i : i + (ih - 1) * sh + 1 : sh, j : j + (iw - 1) * sw + 1 : sw] += tap
        y = np.zeros((n, h, w, self.filters), x.dtype)
        kept = full[:, ch : ch + h, cw : cw + w]
        y[:, : kept.shape[1], : kept.shape[2]] = kept
        if self.use_bias:
            y = y + params["bias"]
        return activate(y.astype(x.dtype), self.activation)


class Conv1D(Layer):
    """1-D convolution on `(length, channels)`. Kernel `(width, in, out)`."""

    positional: ClassVar = ("filters", "kernel_size")
    type: Literal["Conv1D"] = "Conv1D"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "id": "Conv1D-same",
            "layer": {"type": "Conv1D", "filters": 3, "kernel_size": 3, "padding": "same"},
            "input_shape": [7, 2],
        }
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    filters: PositiveInt
    kernel_size: PositiveInt
    strides: PositiveInt = 1
    padding: Padding = "valid"
    activation: Activation | None = None
    use_bias: bool = True
    kernel_initializer: InitializerOption = None
    bias_initializer: InitializerOption = None

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2:
            raise ValueError(f"Conv1D expects (length, channels), got {input_shape}")
        return (
            window_output(input_shape[0], self.kernel_size, self.strides, self.padding),
            self.filters,
        )

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        cin, k = input_shape[-1], self.kernel_size
        specs = {
            "kernel": ParamSpec(
                (k, cin, self.filters),
                self.initializer("kernel_initializer", "glorot_uniform"),
                (k * cin, k * self.filters),
            )
        }
        if self.use_bias:
            init = self.initializer("bias_initializer", "zeros")
            specs["bias"] = ParamSpec((self.filters,), init)
        return specs

    def forward_flops(self, input_shape: Shape) -> int:
        return _conv_flops(self, input_shape)

    def forward(self, xp, params, x, training=False, rng=None):
        kernel, strides = (self.kernel_size,), (self.strides,)
        windows = _windows(_pad(x, kernel, strides, self.padding, 0.0), kernel, strides)
        y = np.einsum("nlci,ico->nlo", windows, params["kernel"], optimize=True)
        if self.use_bias:
            y = y + params["bias"]
        return activate(y.astype(x.dtype), self.activation)


class _Pool2D(Layer):
    positional: ClassVar = ("pool_size",)
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    pool_size: SizeOption = 2
    strides: SizeOption | None = None
    padding: Padding = "valid"

    def _geometry(self) -> tuple[tuple[int, int], tuple[int, int]]:
        pool = as_pair(self.pool_size)
        return pool, as_pair(self.strides) if self.strides is not None else pool

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"{self.type} expects (height, width, channels), got {input_shape}")
        (ph, pw), (sh, sw) = self._geometry()
        return (
            window_output(input_shape[0], ph, sh, self.padding),
            window_output(input_shape[1], pw, sw, self.padding),
            input_shape[2],
        )


class MaxPool2D(_Pool2D):
    """Max over windows; `same` padding never picks a padded value."""

    type: Literal["MaxPool2D"] = "MaxPool2D"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "MaxPool2D", "pool_size": 2}, "input_shape": [6, 6, 2]}
    ]

    def forward(self, xp, params, x, training=False, rng=None):
        pool, strides = self._geometry()
        windows = _windows(_pad(x, pool, strides, self.padding, -np.inf), pool, strides)
        return windows.max(axis=(-2, -1)).astype(x.dtype)


class AvgPool2D(_Pool2D):
    """Mean over windows; with `same` padding the padded cells are not counted (as Keras)."""

    type: Literal["AvgPool2D"] = "AvgPool2D"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "id": "AvgPool2D-same",
            "layer": {"type": "AvgPool2D", "pool_size": 3, "strides": 2, "padding": "same"},
            "input_shape": [5, 5, 2],
        }
    ]

    def forward(self, xp, params, x, training=False, rng=None):
        pool, strides = self._geometry()
        total = _windows(_pad(x, pool, strides, self.padding, 0.0), pool, strides).sum(
            axis=(-2, -1)
        )
        ones = np.ones((1, *x.shape[1:3], 1), dtype=x.dtype)
        count = _windows(_pad(ones, pool, strides, self.padding, 0.0), pool, strides).sum(
            axis=(-2, -1)
        )
        return (total / count).astype(x.dtype)


class GlobalAvgPool(Layer):
    """Mean over every axis but the channels: `(H, W, C)` or `(L, C)` to `(C,)`."""

    type: Literal["GlobalAvgPool"] = "GlobalAvgPool"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "GlobalAvgPool"}, "input_shape": [4, 4, 3]}
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 2:
            raise ValueError(f"GlobalAvgPool expects spatial axes and channels, got {input_shape}")
        return (input_shape[-1],)

    def forward(self, xp, params, x, training=False, rng=None):
        return x.mean(axis=tuple(range(1, x.ndim - 1)))
