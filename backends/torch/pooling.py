"""torch modules of MaxPool1D/AvgPool1D (the 2-D pools of `layers.py` on `(N, L, 1, C)`),
GlobalMaxPool (`amax`), and the upsampling layers UpSampling2D (`repeat_interleave`) and
Conv2DTranspose (`F.conv_transpose2d`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from crosstrain.nn.layers import Shape, as_pair
from torch import nn

from .layers import ACTIVATIONS, Pool2D, _optional_param, _param


class Pool1D(nn.Module):
    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.pool = Pool2D(layer.as_2d(), (input_shape[0], 1, input_shape[1]), factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x.unsqueeze(2)).squeeze(2)


class GlobalMaxPool(nn.Module):
    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.axes = tuple(range(1, len(input_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=self.axes)


class UpSampling2D(nn.Module):
    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.size = as_pair(layer.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.size[0], dim=1).repeat_interleave(self.size[1], dim=2)


class Conv2DTranspose(nn.Module):
    """torch's weight is `(in, filters, kh, kw)`, which the `conv2d` layout maps to Keras's
    `(kh, kw, filters, in)`. The full result is cropped (or zero-padded) to Keras's size."""

    canonical = {"kernel": ("weight", "conv2d"), "bias": ("bias", "same")}

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        kernel = as_pair(layer.kernel_size)
        self.weight = _param((input_shape[-1], layer.filters, *kernel), factory)
        _optional_param(self, "bias", layer.use_bias, (layer.filters,), factory)
        geometry = layer.geometry(input_shape)
        self.strides = tuple(s for _, s, _, _ in geometry)
        self.window = [(crop, out) for _, _, out, crop in geometry]
        self.activation = ACTIVATIONS[layer.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (ch, h), (cw, w) = self.window
        y = F.conv_transpose2d(x.permute(0, 3, 1, 2), self.weight, None, self.strides)
        y = y[:, :, ch : ch + h, cw : cw + w]
        if y.shape[2] < h or y.shape[3] < w:  # a kernel shorter than its stride
            y = F.pad(y, (0, w - y.shape[3], 0, h - y.shape[2]))
        y = y.permute(0, 2, 3, 1)
        return self.activation(y if self.bias is None else y + self.bias)
