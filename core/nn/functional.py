"""Graphs written in Python, Keras functional style: layers called on symbolic tensors record
the nodes of a `model.nodes` graph (what `crosstrain.Module.forward` builds).

    inputs = {"features": Input((13,)), "category": Input((), "int64")}
    def forward(features, category):
        emb = layers.Embedding(10, 4)(category)
        x = layers.Concatenate()([features, layers.Flatten()(emb)])
        return layers.Dense(2)(layers.Dense(32)(x))

A layer object called twice becomes one node and a second that `shares` it; `Dense(...)(x,
tie=embedding)` projects with that Embedding layer's table. Node names are the layer's `name`,
else `<type in lower case>_<n>` in call order (as chain layers are named).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Input:
    """A named model input of a functional graph: per-sample shape and dtype."""

    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class Symbol:
    """The output of a model input or of a node, while a graph is traced."""

    name: str
    tracer: Tracer = field(repr=False, compare=False)


class Tracer:
    """Collects the nodes that layer calls on `Symbol`s make."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.owners: dict[int, str] = {}
        self.names: set[str] = set()
        self.called: list[Any] = []  # keeps every layer alive, so no `id` is reused

    def _name(self, layer: Any) -> str:
        base = layer.name or f"{layer.type.lower()}_{len(self.nodes)}"
        name, count = base, 1
        while name in self.names:
            name, count = f"{base}_{count}", count + 1
        self.names.add(name)
        return name

    def call(self, layer: Any, inputs: Any, tie: Any = None) -> Symbol:
        symbols = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not all(isinstance(s, Symbol) for s in symbols):
            raise TypeError(f"{layer.type} was called on {inputs!r}: call layers on symbols")
        self.called.append(layer)
        node: dict[str, Any] = {"inputs": [s.name for s in symbols]}
        owner = self.owners.get(id(layer))
        if owner is not None:
            node["shares"] = owner
        else:
            node["layer"] = layer.model_copy(update={"name": None})  # the node's name is its
        if tie is not None:
            if id(tie) not in self.owners:
                raise ValueError("tie= names an Embedding layer called earlier in forward")
            node["tie"] = self.owners[id(tie)]
        name = self._name(layer)
        node["name"] = name
        if owner is None:
            self.owners[id(layer)] = name
        self.nodes.append(node)
        return Symbol(name, self)


def trace(inputs: dict[str, Input], forward: Any) -> dict[str, Any]:
    """`model:` data of the graph `forward(*symbols)` builds over `inputs` (in order)."""
    tracer = Tracer()
    tracer.names.update(inputs)
    symbols = [Symbol(name, tracer) for name in inputs]
    out = forward(*symbols)
    outputs = [s.name for s in out] if isinstance(out, (list, tuple)) else [out.name]
    model: dict[str, Any] = {
        "inputs": {n: {"shape": list(i.shape), "dtype": i.dtype} for n, i in inputs.items()},
        "nodes": tracer.nodes,
    }
    if outputs != [tracer.nodes[-1]["name"]]:
        model["outputs"] = outputs[0] if len(outputs) == 1 else outputs
    return model
