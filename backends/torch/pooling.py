"""torch modules of MaxPool1D/AvgPool1D (the 2-D pools of `layers.py` on `(N, L, 1, C)`),
GlobalMaxPool (`amax`) and UpSampling2D (`repeat_interleave`)."""

from __future__ import annotations

from typing import Any

import torch
from crosstrain.nn.layers import Shape, as_pair
from torch import nn

from .layers import Pool2D


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
