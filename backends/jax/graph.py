"""A graph model (`model.nodes`) as one nnx module, and the merge layers' modules.

`Graph` keeps one module per node that owns its layer in `layers` (an `nnx.Dict` keyed by node
name, so canonical names are `<node>/<param>` as in a chain); a node that `shares` another's
layer calls that module, so the variables exist once and their gradients add up; a Dense `tie`d
to an Embedding multiplies by that Embedding's table, transposed.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from crosstrain.nn.graph import graph_inputs, output_names
from crosstrain.nn.layers import Shape
from crosstrain.nn.model import LayerNode, ModelSpec, plan
from flax import nnx
from jax import Array


class Merge(nnx.Module):
    """Add, Multiply or Concatenate of a list of channels-last batches."""

    def __init__(self, layer: Any, shape: Any, name: str, build: Any):
        self.kind = layer.type
        self.axis = layer.feature_axis(len(shape[0])) + 1 if self.kind == "Concatenate" else 0

    def __call__(self, xs: list[Array], train: bool = False, key: Any = None) -> Array:
        if self.kind == "Concatenate":
            return jnp.concatenate(list(xs), axis=self.axis)
        total = xs[0]
        for other in xs[1:]:
            total = total + other if self.kind == "Add" else total * other
        return total


class TiedDense(nnx.Module):
    """A Dense whose kernel is an Embedding's table, transposed (only its bias is its own)."""

    def __init__(self, layer: Any, shape: Shape, name: str, build: Any):
        self.bias = build.param(f"{name}/bias") if layer.use_bias else None
        self.activation = layer.activation

    def __call__(self, x: Array, table: Array) -> Array:
        from .model import ACTIVATIONS

        y = x @ table.T
        if self.bias is not None:
            y = y + self.bias[...]
        return ACTIVATIONS[self.activation](y)


class Graph(nnx.Module):
    """The whole model of a graph spec: runs the nodes in order on named values."""

    def __init__(self, model: ModelSpec, build: Any, make: Any):
        nodes: list[LayerNode] = plan(model)
        modules, plain = {}, []
        for node in nodes:
            if node.shares is not None:
                continue
            if node.tie is not None:
                modules[node.name] = TiedDense(node.layer, node.input_shape, node.name, build)
                continue
            modules[node.name], native = make(node.layer, node.input_shape, node.name, build)
            if not native:
                plain.append(node.name)
        self.layers = nnx.Dict(modules)
        self.plain = tuple(plain)
        self.input_names = tuple(graph_inputs(model))
        self.output = output_names(model)[0]
        self.steps = tuple(
            (n.name, n.shares or n.name, n.inputs, n.layer.merge, n.tie) for n in nodes
        )

    def __call__(self, x: Any, train: bool = False, key: Any = None) -> Array:
        inputs = x if isinstance(x, (tuple, list)) else (x,)
        values = dict(zip(self.input_names, inputs, strict=True))
        for name, owner, reads, merge, tie in self.steps:
            args = [values[read] for read in reads]
            module = self.layers[owner]
            if tie is not None:
                values[name] = module(args[0], self.layers[tie].embeddings[...])
            elif owner in self.plain:
                values[name] = module(args[0])
            else:
                values[name] = module(args if merge else args[0], train=train, key=key)
        return values[self.output]
