"""torch modules of the sequence layers: attention on `F.scaled_dot_product_attention` (grouped
heads, rotary positions), RMSNorm on `F.rms_norm`, GatedMLP, GELU (exact or tanh).

Built like the modules of `layers.py`: `Module(layer, input_shape, factory)`, with `canonical`
naming where each canonical parameter lives and its layout.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from crosstrain.nn.layers import Shape, rope_tables
from torch import nn

from .layers import _optional_param, _param


def _linear_canonical(projections: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    return {
        f"{p}/{k}": (f"{p}_{a}", "linear" if k == "kernel" else "same")
        for p in projections
        for k, a in (("kernel", "weight"), ("bias", "bias"))
    }


class Attention(nn.Module):
    """MultiHeadSelfAttention: `F.scaled_dot_product_attention` with `enable_gqa` for grouped
    key/value heads, scale `1/sqrt(head_dim)`, rotary tables from core (non-persistent
    buffers), attention dropout in training."""

    canonical = _linear_canonical(("query", "key", "value", "output"))

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        features = input_shape[-1]
        self.heads, self.kv_heads, self.head_dim = layer.num_heads, layer.kv_heads, layer.head_dim
        widths = {"query": self.heads * self.head_dim, "key": self.kv_heads * self.head_dim}
        widths["value"] = widths["key"]
        for proj, width in widths.items():
            setattr(self, f"{proj}_weight", _param((width, features), factory))
            _optional_param(self, f"{proj}_bias", layer.use_bias, (width,), factory)
        self.output_weight = _param((features, widths["query"]), factory)
        _optional_param(self, "output_bias", layer.use_bias, (features,), factory)
        self.causal, self.dropout = layer.causal, layer.dropout
        self.rope = layer.rope_theta is not None
        self.register_buffer("cos", None, persistent=False)
        self.register_buffer("sin", None, persistent=False)
        if self.rope:
            cos, sin = rope_tables(input_shape[0], self.head_dim, layer.rope_theta)
            self.cos = torch.from_numpy(cos).to(factory["device"])
            self.sin = torch.from_numpy(sin).to(factory["device"])

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotary positions on `(batch, heads, sequence, head_dim)`."""
        seq, half = x.shape[2], self.head_dim // 2
        cos, sin = self.cos[:seq].to(x.dtype), self.sin[:seq].to(x.dtype)
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape

        def project(name: str, heads: int) -> torch.Tensor:
            y = F.linear(x, getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias"))
            return y.view(batch, seq, heads, self.head_dim).transpose(1, 2)

        q = project("query", self.heads)
        k, v = project("key", self.kv_heads), project("value", self.kv_heads)
        if self.rope:
            q, k = self._rotate(q), self._rotate(k)
        mixed = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal,
            scale=1.0 / math.sqrt(self.head_dim),
            enable_gqa=self.kv_heads != self.heads,
        )
        mixed = mixed.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim)
        return F.linear(mixed, self.output_weight, self.output_bias)


class PositionEmbedding(nn.Module):
    canonical = {"embeddings": ("weight", "same")}

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.weight = _param((layer.sequence_length, input_shape[-1]), factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = self.weight[: x.shape[1]].to(x.dtype)
        if not torch.is_grad_enabled():  # a view of a parameter would still require grad
            table = table.detach()
        return table.expand(x.shape)


class RMSNorm(nn.Module):
    canonical = {"scale": ("weight", "same")}

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.shape = (input_shape[-1],)
        self.weight = _param(self.shape, factory)
        self.epsilon = layer.epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.shape, self.weight.to(x.dtype), self.epsilon)


GATED_ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu}


class GatedMLP(nn.Module):
    """`down(activation(gate(x)) * up(x))`."""

    canonical = _linear_canonical(("gate", "up", "down"))

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        features, units = input_shape[-1], layer.units
        for proj, shape in (("gate", (units, features)), ("up", (units, features))):
            setattr(self, f"{proj}_weight", _param(shape, factory))
            _optional_param(self, f"{proj}_bias", layer.use_bias, (units,), factory)
        self.down_weight = _param((features, units), factory)
        _optional_param(self, "down_bias", layer.use_bias, (features,), factory)
        self.activation = GATED_ACTIVATIONS[layer.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.activation(F.linear(x, self.gate_weight, self.gate_bias))
        hidden = gate * F.linear(x, self.up_weight, self.up_bias)
        return F.linear(hidden, self.down_weight, self.down_bias)


class GELU(nn.Module):
    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.approximate = "tanh" if layer.approximate else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"
