"""A FLOP estimate of a neutral model from its layer plan, for throughput monitoring.

Each layer counts its own work in `Layer.forward_flops(input_shape)` (per sample, 2 FLOPs per
multiply-add of its matrix products: Dense, Conv1D/Conv2D, MultiHeadSelfAttention); this
module only sums them over the plan, children of a Residual or Sequential included. Everything
else (biases, activations, normalisation, pooling, dropout, embedding look-ups, the loss and
the optimizer update) counts 0, as in the usual "model FLOPs" figure. Training is taken as 3 ×
the forward pass (the backward pass computes two products per forward product).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crosstrain.nn.model import ModelSpec

TRAIN_FACTOR = 3
"""Forward + backward ≈ 3 × forward."""


def forward_flops(model: ModelSpec) -> int:
    """FLOPs of one forward pass of one sample (see the module docstring for what counts)."""
    from crosstrain.nn.model import plan, walk

    return sum(int(node.layer.forward_flops(tuple(node.input_shape))) for node in walk(plan(model)))


def train_flops_per_sample(model: ModelSpec) -> int:
    """FLOPs of one training step per sample: `TRAIN_FACTOR` × `forward_flops`."""
    return TRAIN_FACTOR * forward_flops(model)
