"""A graph model (`model.nodes`) as a functional Keras model, and the merge layers' builders.

Each node is built by `_Builder.node` on the Keras tensors of the names it reads. A node whose
layer another node `shares` is built as a small functional `keras.Model` of its own, called once
per node that uses it (Keras's shared layers: one set of variables, gradients summed); a Dense
`tie`d to an Embedding is `TiedDense`, which multiplies by that Embedding's table, transposed.
"""

from __future__ import annotations

from typing import Any

import keras
from crosstrain.nn.graph import graph_inputs, output_names
from crosstrain.nn.model import LayerNode, ModelSpec


def merge(builder: Any, node: LayerNode, xs: Any, options: dict[str, Any]) -> Any:
    """Add, Multiply or Concatenate: Keras's own layers (Concatenate's axis counts the batch
    axis in both)."""
    layer = node.layer
    if layer.type == "Concatenate":
        return keras.layers.Concatenate(axis=layer.axis, **options)(list(xs))
    cls = keras.layers.Add if layer.type == "Add" else keras.layers.Multiply
    return cls(**options)(list(xs))


class TiedDense(keras.layers.Layer):
    """A Dense whose kernel is an Embedding layer's table, transposed (its bias is its own)."""

    def __init__(self, table_layer: Any, units: int, use_bias: bool, activation: Any, **options):
        super().__init__(**options)
        self.table_layer, self.units, self.use_bias = table_layer, units, use_bias
        self.activation = keras.activations.get(activation)

    def build(self, input_shape: Any) -> None:
        self.bias = (
            self.add_weight((self.units,), initializer="zeros", name="bias")
            if self.use_bias
            else None
        )

    def call(self, x: Any) -> Any:
        table = keras.ops.cast(self.table_layer.embeddings, x.dtype)
        y = keras.ops.matmul(x, keras.ops.transpose(table))
        if self.bias is not None:
            y = y + keras.ops.cast(self.bias, y.dtype)
        return self.activation(y)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], self.units)


def build_graph(builder: Any, model: ModelSpec, nodes: list[LayerNode], keras_name: Any) -> Any:
    """The functional Keras model of a graph spec (ParamRefs collected into `builder.refs`)."""
    inputs = {}
    for name, spec in graph_inputs(model).items():
        dtype = spec.dtype
        if dtype == "int64" and keras.backend.backend() == "jax":
            dtype = "int32"  # jax keeps 32-bit integers unless x64 is enabled
        inputs[name] = keras.Input(shape=tuple(spec.shape), dtype=dtype, name=name)
    values = dict(inputs)
    shared = {n.shares for n in nodes if n.shares is not None}
    natives: dict[str, Any] = {}
    layers_by_node: dict[str, Any] = {}
    for node in nodes:
        args = [values[read] for read in node.inputs]
        arg = args if node.layer.merge else args[0]
        if node.shares is not None:
            values[node.name] = natives[node.shares](arg)
        elif node.name in shared:
            inner = [keras.Input(shape=tuple(a.shape[1:]), dtype=a.dtype) for a in args]
            out = builder.node(node, inner if node.layer.merge else inner[0])
            natives[node.name] = keras.Model(
                inner if node.layer.merge else inner[0],
                out,
                name=f"{keras_name(node.name)}__shared",
            )
            values[node.name] = natives[node.name](arg)
        elif node.tie is not None:
            layer = node.layer
            native = TiedDense(
                layers_by_node[node.tie],
                layer.units,
                layer.use_bias,
                layer.activation,
                name=keras_name(node.name),
                dtype=builder.dtype,
            )
            values[node.name] = native(arg)
            if layer.use_bias:
                builder._add(node, "bias", native.bias)
        else:
            before = len(builder.refs)
            values[node.name] = builder.node(node, arg)
            if node.layer.type == "Embedding":
                layers_by_node[node.name] = _owner_of(
                    builder.refs[before].variable, values[node.name]
                )
    names = list(inputs)
    native_inputs = inputs[names[0]] if len(names) == 1 else [inputs[n] for n in names]
    return keras.Model(native_inputs, values[output_names(model)[0]], name="crosstrain")


def _owner_of(variable: Any, tensor: Any) -> Any:
    """The Keras layer that produced `tensor` (an Embedding's output), holding `variable`."""
    layer = tensor._keras_history.operation
    assert any(w is variable for w in layer.weights)
    return layer
