"""RMSNorm as a torch module (imported only by the torch backend)."""

from __future__ import annotations

import torch
from torch import nn


class TorchRMSNorm(nn.Module):
    """RMSNorm over the last axis with a learned `scale`."""

    def __init__(self, features: int, epsilon: float):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(features))
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.epsilon) * self.scale
