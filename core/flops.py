"""A FLOP estimate of a neutral model from its layer plan, for throughput monitoring.

What is counted: the multiply-adds of the matrix products, as 2 FLOPs each — Dense
(`in × units` per position), Conv1D/Conv2D (`kernel window × in channels × filters` per output
position), MultiHeadSelfAttention (the four projections, the scores `q·k` and the weighted sum of
the values) — and a Residual's or Sequential's children. Everything else (biases, activations,
normalisation, pooling, dropout, embedding look-ups, the loss and the optimizer update) is
left out, as in the usual "model FLOPs" figure: it is a small share for matmul-heavy models.
A plugin layer may add its own count with a method `forward_flops(input_shape) -> int`
(per sample); a layer without one counts 0. Training is taken as 3 × the forward pass
(the backward pass computes two products per forward product).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import LayerNode, ModelSpec

TRAIN_FACTOR = 3
"""Forward + backward ≈ 3 × forward."""


def _node_flops(node: LayerNode) -> int:
    """Forward FLOPs of one layer for one sample (children are counted by the caller)."""
    layer, shape_in, shape_out = node.layer, node.input_shape, node.output_shape
    own = getattr(layer, "forward_flops", None)
    if callable(own):
        return int(own(tuple(shape_in)))
    kind = layer.type
    if kind == "Dense":
        positions = math.prod(shape_in[:-1])
        return 2 * positions * shape_in[-1] * layer.units
    if kind in ("Conv1D", "Conv2D"):
        kernel = node.layer.params(shape_in)["kernel"].shape  # (..window.., in, out)
        window = math.prod(kernel[:-1])
        return 2 * math.prod(shape_out[:-1]) * window * kernel[-1]
    if kind == "MultiHeadSelfAttention":
        seq, features = shape_in
        inner = layer.num_heads * layer.head_dim
        projections = 2 * seq * features * inner * 4
        attention = 2 * seq * seq * inner * 2
        return projections + attention
    return 0


def forward_flops(model: ModelSpec) -> int:
    """FLOPs of one forward pass of one sample (see the module docstring for what counts)."""
    from .model import plan, walk

    return sum(_node_flops(node) for node in walk(plan(model)))


def train_flops_per_sample(model: ModelSpec) -> int:
    """FLOPs of one training step per sample: `TRAIN_FACTOR` × `forward_flops`."""
    return TRAIN_FACTOR * forward_flops(model)
