"""A graph model (`model.nodes`) as one `nn.Module`, and the merge layers' modules.

`Graph` keeps one module per node that owns its layer in `layers` (an `nn.ModuleDict` keyed by
node name); a node that `shares` another's layer calls that module, so the parameters exist
once and their gradients add up; a Dense `tie`d to an Embedding multiplies by that
Embedding's table (`F.linear` takes the `(vocab, dim)` table as its `(out, in)` weight).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from crosstrain.nn.graph import graph_inputs, output_names
from crosstrain.nn.layers import Shape
from crosstrain.nn.model import LayerNode, ModelSpec
from torch import nn

from .layers import ACTIVATIONS


class Merge(nn.Module):
    """Add, Multiply or Concatenate of a list of channels-last batches."""

    def __init__(self, layer: Any, input_shape: Any, factory: dict[str, Any]):
        super().__init__()
        self.kind = layer.type
        self.dim = layer.feature_axis(len(input_shape[0])) + 1 if self.kind == "Concatenate" else 0

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "Concatenate":
            return torch.cat(list(xs), dim=self.dim)
        total = xs[0]
        for other in xs[1:]:
            total = total + other if self.kind == "Add" else total * other
        return total


class TiedDense(nn.Module):
    """A Dense whose kernel is an Embedding's table, transposed (only its bias is its own)."""

    canonical = {"bias": ("bias", "same")}

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        bias = nn.Parameter(torch.empty((layer.units,), **factory)) if layer.use_bias else None
        self.register_parameter("bias", bias)
        self.activation = ACTIVATIONS[layer.activation]

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.activation(F.linear(x, table, self.bias))


class Graph(nn.Module):
    """Runs the nodes in order on a dict of values named by model input and node."""

    def __init__(self, model: ModelSpec, nodes: list[LayerNode], modules: dict[str, nn.Module]):
        super().__init__()
        self.layers = nn.ModuleDict(modules)
        self.input_names = tuple(graph_inputs(model))
        self.output = output_names(model)[0]
        self.steps = tuple(
            (n.name, n.shares or n.name, n.inputs, n.layer.merge, n.tie) for n in nodes
        )

    def forward(self, x: Any) -> torch.Tensor:
        inputs = x if isinstance(x, (tuple, list)) else (x,)
        values = dict(zip(self.input_names, inputs, strict=True))
        for name, key, reads, merge, tie in self.steps:
            args = [values[read] for read in reads]
            module = self.layers[key]
            if merge:
                values[name] = module(args)
            elif tie is not None:
                values[name] = module(args[0], self.layers[tie].weight)
            else:
                values[name] = module(args[0])
        return values[self.output]


def build_graph(
    model: ModelSpec, nodes: list[LayerNode], build: Any, refs: list[Any], factory: dict[str, Any]
) -> Graph:
    """The Graph of planned `nodes`; `build(node, refs, factory)` makes one owner's module."""
    modules: dict[str, nn.Module] = {}
    for node in nodes:
        if node.shares is not None:
            continue
        modules[node.name] = build(node, refs, factory)
    return Graph(model, nodes, modules)
