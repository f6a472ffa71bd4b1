"""The neutral layer vocabulary as one functional `keras.Model` of built-in Keras layers.

Every layer maps onto a stock Keras layer with the same semantics (`same` padding, BatchNorm
momentum and biased variance, exact GELU ...), so the model saves to a `.keras` file that
`keras.saving.load_model(..., safe_mode=True)` opens without crosstrain (with
`model.dropout_masks: shared` training uses `SharedDropout`; exports build stock Dropout). Residual adds its
input with `keras.layers.Add`; Sequential inlines its layers; the sequence layers' builders
are in `sequence.py`.

Keras layer names are the canonical names with `/` written as `__` (Keras forbids `/`, the
torch engine `.`).
Canonical layouts equal Keras's except MultiHeadAttention's, whose kernels keep heads on their
own axis, `(features, heads, head_dim)`; a `ParamRef` converts by reshaping.

Each layer is built by the route `crosstrain.nn.layers.layer_route` picks: the layer's own
`keras_layer(input_shape, name, dtype) -> keras.layers.Layer` (pass `name` and `dtype`, the dtype
policy, on to the Keras layer; its weights, in creation order, are its `params()` in declaration
order, same sizes, layouts up to a reshape), the builder function that `LAYER_BUILDERS` names in
this module, or `ArrayLayer` around an array-API `forward`.
"""

from __future__ import annotations

import importlib
import zlib
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from crosstrain.errors import UnsupportedFeature
from crosstrain.nn.dropout import DROPOUT_CALLS, call_key, name_salt, shared_dropout
from crosstrain.nn.layers import layer_route
from crosstrain.nn.model import LayerNode, ModelSpec, frozen_params, plan

from .array_layer import ArrayLayer
from .plugin import LAYER_BUILDERS, NATIVE_METHOD
from .xp import KERAS_OPS


@dataclass
class ParamRef:
    """One canonical parameter and the Keras variable that holds it.

    Attributes:
        name: canonical name, e.g. `residual_2/dense_0/kernel`.
        variable: the `keras.Variable`.
        shape: canonical shape (the variable's may differ only by a reshape).
        trainable: False for running statistics.
    """

    name: str
    variable: Any
    shape: tuple[int, ...]
    trainable: bool

    def canonical(self, value: np.ndarray) -> np.ndarray:
        """A value of the variable (numpy) in the canonical layout, float32."""
        return np.asarray(value).astype(np.float32).reshape(self.shape)

    def write(self, array: np.ndarray) -> None:
        """Assigns a canonical array (reshaped to the variable's layout)."""
        value = np.asarray(array, np.float32).reshape(tuple(self.variable.shape))
        self.variable.assign(value.astype(keras.backend.standardize_dtype(self.variable.dtype)))


def to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of an engine tensor or variable value (torch tensors detached, floats of
    torch as float32), without `keras.ops.convert_to_numpy` and its numpy-2 copy warnings."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        return (value.float() if value.dtype.is_floating_point else value).numpy().copy()
    if hasattr(value, "numpy"):
        return np.array(value.numpy(), copy=True)
    return np.array(value, copy=True)


def keras_name(canonical: str) -> str:
    """A Keras layer name for a canonical name (`/` is not allowed in Keras names)."""
    return canonical.replace("/", "__")


def table_builder(entry: str) -> Any:
    """The builder a `LAYER_BUILDERS` entry names: `function` in this module,
    `module.function` in that module of this package."""
    module, _, name = entry.rpartition(".")
    if not module:
        return globals()[name]
    return getattr(importlib.import_module(f".{module}", __package__), name)


class _Builder:
    """Walks the planned layer tree, creating and calling Keras layers, collecting ParamRefs."""

    def __init__(self, dtype: str, seed: int, backend: str, shared_masks: bool = False):
        self.dtype, self.seed, self.backend = dtype, seed, backend
        self.shared_masks = shared_masks
        self.refs: list[ParamRef] = []

    def chain(self, nodes: list[LayerNode], x: Any) -> Any:
        for node in nodes:
            x = self.node(node, x)
        return x

    def node(self, node: LayerNode, x: Any) -> Any:
        """Builds one node's Keras layer(s) on `x` by the route `layer_route` picks."""
        layer = node.layer
        options = {"name": keras_name(node.name), "dtype": self.dtype}
        route = layer_route(layer, LAYER_BUILDERS, NATIVE_METHOD)
        if route == "table":
            return table_builder(LAYER_BUILDERS[layer.type])(self, node, x, options)
        if route == "native":
            native = layer.keras_layer(tuple(node.input_shape), **options)
        elif route == "array":
            native = ArrayLayer(layer, tuple(node.input_shape), **options)
        else:
            raise UnsupportedFeature(
                self.backend,
                f"layer {layer.type} ({node.path}): no keras_layer and no array-API forward",
            )
        y = native(x)
        if route == "array":
            for pname, variable in native.params_by_name.items():
                self._add(node, pname, variable)
        else:
            self.weights_in_order(node, native)
        return y

    def apply(self, node: LayerNode, native: Any, x: Any) -> Any:
        """Calls a built-in Keras layer whose weights carry the canonical names."""
        y = native(x)
        for pname in node.layer.params(node.input_shape):
            self._add(node, pname, getattr(native, pname))
        return y

    def _add(self, node: LayerNode, pname: str, variable: Any) -> None:
        spec = node.layer.params(node.input_shape)[pname]
        self.refs.append(
            ParamRef(f"{node.name}/{pname}", variable, tuple(spec.shape), spec.trainable)
        )

    def weights_in_order(self, node: LayerNode, native: Any) -> None:
        """A plugin's Keras layer: its weights, in creation order, are `params()` in order."""
        specs = node.layer.params(node.input_shape)
        weights = list(native.weights)
        if len(weights) != len(specs):
            raise UnsupportedFeature(
                self.backend,
                f"layer {node.layer.type} ({node.path}): its keras_layer has "
                f"{len(weights)} weights, params() declares {len(specs)}",
            )
        for pname, variable in zip(specs, weights, strict=True):
            self._add(node, pname, variable)


# -- the table's builders: (builder, node, x, options) -> output ---------------------------------


def sequential(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    return builder.chain(node.children, x)


def residual(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    return keras.layers.Add(**options)([x, builder.chain(node.children, x)])


def dense(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer = node.layer
    native = keras.layers.Dense(
        layer.units, activation=layer.activation, use_bias=layer.use_bias, **options
    )
    return builder.apply(node, native, x)


def conv(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer = node.layer
    cls = {
        "Conv1D": keras.layers.Conv1D,
        "Conv2D": keras.layers.Conv2D,
        "Conv2DTranspose": keras.layers.Conv2DTranspose,
    }[layer.type]
    native = cls(
        layer.filters,
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        activation=layer.activation,
        use_bias=layer.use_bias,
        **options,
    )
    return builder.apply(node, native, x)


def pool(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer = node.layer
    cls = keras.layers.MaxPooling2D if layer.type == "MaxPool2D" else keras.layers.AveragePooling2D
    return cls(layer.pool_size, strides=layer.strides, padding=layer.padding, **options)(x)


def global_pool(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    rank = len(node.input_shape)
    if rank == 3:
        return keras.layers.GlobalAveragePooling2D(**options)(x)
    if rank != 2:
        x = keras.layers.Reshape(
            (-1, node.input_shape[-1]), name=f"{options['name']}__flat", dtype=builder.dtype
        )(x)
    return keras.layers.GlobalAveragePooling1D(**options)(x)


def batch_norm(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer = node.layer
    native = keras.layers.BatchNormalization(
        momentum=layer.momentum, epsilon=layer.epsilon, **options
    )
    return builder.apply(node, native, x)


def layer_norm(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    native = keras.layers.LayerNormalization(epsilon=node.layer.epsilon, **options)
    return builder.apply(node, native, x)


class SharedDropout(keras.layers.Layer):
    """Dropout with the masks of `crosstrain.nn.dropout` (`model.dropout_masks: shared`).

    `calls` counts this layer's training forwards (a non-trainable int32 variable, so the
    compiled steps of every engine carry it as they carry BatchNorm statistics); the key of a
    forward is `call_key(seed, calls)`, as on torch and JAX.
    """

    def __init__(self, rate: float, seed: int, salt: int, **options: Any):
        super().__init__(**options)
        self.rate, self.seed, self.salt = rate, seed, salt
        self.calls = self.add_variable(
            (), initializer="zeros", dtype="int32", trainable=False, name=DROPOUT_CALLS
        )

    def call(self, x: Any, training: bool = False) -> Any:
        if not training or self.rate == 0.0:
            return x
        key = call_key(KERAS_OPS, self.seed, self.calls.value)  # before the variable moves on
        self.calls.assign(self.calls.value + 1)
        return shared_dropout(KERAS_OPS, x, key, self.salt, self.rate)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def dropout(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    if builder.shared_masks:
        return SharedDropout(node.layer.rate, builder.seed, name_salt(node.name), **options)(x)
    seed = (builder.seed * 1_000_003 + zlib.crc32(node.name.encode())) % (2**31 - 1)
    return keras.layers.Dropout(node.layer.rate, seed=seed, **options)(x)


def embedding(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    native = keras.layers.Embedding(node.layer.vocab_size, node.layer.dim, **options)
    return builder.apply(node, native, x)


def flatten(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    return keras.layers.Flatten(**options)(x)


def reshape(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    return keras.layers.Reshape(tuple(node.output_shape), **options)(x)


def activation(builder: _Builder, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    if node.layer.type == "Softmax":
        return keras.layers.Softmax(axis=-1, **options)(x)
    return keras.layers.Activation(type(node.layer).activation, **options)(x)


def build_model(
    model: ModelSpec, dtype: str = "float32", seed: int = 0, backend: str = "keras"
) -> tuple[Any, list[ParamRef]]:
    """The functional Keras model of a model spec and its canonical parameter map.

    Args:
        model: the spec's model section.
        dtype: the Keras dtype policy of every layer (`float32`, `mixed_bfloat16` ...).
        seed: seeds Dropout layers (each by its canonical name).
        backend: the backend name used in error messages.

    Returns:
        `(keras.Model, refs)` with one ParamRef per canonical parameter, in canonical order.
    """
    nodes = plan(model)
    builder = _Builder(dtype, seed, backend, model.dropout_masks == "shared")
    if model.is_graph:
        from .graph import build_graph

        native = build_graph(builder, model, nodes, keras_name)
    else:
        dtype_in = model.resolved_input_dtype
        if dtype_in == "int64" and keras.backend.backend() == "jax":
            dtype_in = "int32"  # jax keeps 32-bit integers unless x64 is enabled
        inputs = keras.Input(shape=tuple(model.input_shape), dtype=dtype_in, name="inputs")
        native = keras.Model(inputs, builder.chain(nodes, inputs), name="crosstrain")
    frozen = frozen_params(model)
    for ref in builder.refs:
        if ref.name in frozen:  # `trainable: false`: a non-trainable Keras weight
            ref.trainable = False
            ref.variable.trainable = False
    return native, builder.refs
