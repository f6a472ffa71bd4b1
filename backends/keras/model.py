"""The neutral layer vocabulary as one functional `keras.Model` of built-in Keras layers.

Every layer maps onto a stock Keras layer with the same semantics (`same` padding, BatchNorm
momentum and biased variance, exact GELU ...), so the model saves to a `.keras` file that
`keras.saving.load_model(..., safe_mode=True)` opens without crosstrain. Residual adds its
input with `keras.layers.Add`; Sequential inlines its layers; MultiHeadSelfAttention is
`keras.layers.MultiHeadAttention` called on `(x, x)`.

Keras layer names are the canonical names with `/` written as `__` (Keras forbids `/`, the
torch engine `.`).
Canonical layouts equal Keras's except MultiHeadAttention's, whose kernels keep heads on their
own axis, `(features, heads, head_dim)`; a `ParamRef` converts by reshaping.

A plugin layer takes part by defining `keras_layer(input_shape, name, dtype) -> keras.layers.Layer`
(pass `name` and `dtype`, the dtype policy, on to the Keras layer); the Keras layer's weights, in
creation order, are its `params()` in declaration order (same sizes, layouts up to a reshape).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from crosstrain.errors import UnsupportedFeature
from crosstrain.model import LayerNode, ModelSpec, plan

ACTIVATIONS = {
    "ReLU": "relu",
    "GELU": "gelu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "Softmax": "softmax",
}


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

    def read(self) -> np.ndarray:
        """The value as a canonical float32 numpy array (a copy)."""
        return to_numpy(self.variable.value).astype(np.float32).reshape(self.shape)

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


class _Builder:
    """Walks the planned layer tree, creating and calling Keras layers, collecting ParamRefs."""

    def __init__(self, dtype: str, seed: int, backend: str):
        self.dtype, self.seed, self.backend = dtype, seed, backend
        self.refs: list[ParamRef] = []

    def chain(self, nodes: list[LayerNode], x: Any) -> Any:
        for node in nodes:
            x = self.node(node, x)
        return x

    def node(self, node: LayerNode, x: Any) -> Any:
        layer, kind = node.layer, node.layer.type
        name = keras_name(node.name)
        options = {"name": name, "dtype": self.dtype}
        if kind == "Sequential":
            return self.chain(node.children, x)
        if kind == "Residual":
            return keras.layers.Add(**options)([x, self.chain(node.children, x)])
        if kind == "MultiHeadSelfAttention":
            native = keras.layers.MultiHeadAttention(
                layer.num_heads,
                layer.head_dim,
                use_bias=layer.use_bias,
                flash_attention=False,
                **options,
            )
            y = native(x, x, use_causal_mask=layer.causal)
            self._refs_mha(node, native)
            return y
        if kind == "GlobalAvgPool" and len(node.input_shape) not in (2, 3):
            x = keras.layers.Reshape(
                (-1, node.input_shape[-1]), name=f"{name}__flat", dtype=self.dtype
            )(x)
            native = keras.layers.GlobalAveragePooling1D(**options)
        else:
            native = self.native_layer(node, options)
        y = native(x)
        self._refs(node, native)
        return y

    def native_layer(self, node: LayerNode, options: dict[str, Any]) -> Any:
        """The Keras layer for a leaf node."""
        layer, kind, L = node.layer, node.layer.type, keras.layers
        if kind == "Dense":
            return L.Dense(
                layer.units, activation=layer.activation, use_bias=layer.use_bias, **options
            )
        if kind in ("Conv2D", "Conv1D"):
            cls = L.Conv2D if kind == "Conv2D" else L.Conv1D
            return cls(
                layer.filters,
                layer.kernel_size,
                strides=layer.strides,
                padding=layer.padding,
                activation=layer.activation,
                use_bias=layer.use_bias,
                **options,
            )
        if kind in ("MaxPool2D", "AvgPool2D"):
            cls = L.MaxPooling2D if kind == "MaxPool2D" else L.AveragePooling2D
            return cls(layer.pool_size, strides=layer.strides, padding=layer.padding, **options)
        if kind == "GlobalAvgPool":
            return (
                L.GlobalAveragePooling1D if len(node.input_shape) == 2 else L.GlobalAveragePooling2D
            )(**options)
        if kind == "BatchNorm":
            return L.BatchNormalization(momentum=layer.momentum, epsilon=layer.epsilon, **options)
        if kind == "LayerNorm":
            return L.LayerNormalization(epsilon=layer.epsilon, **options)
        if kind == "Dropout":
            seed = (self.seed * 1_000_003 + zlib.crc32(node.name.encode())) % (2**31 - 1)
            return L.Dropout(layer.rate, seed=seed, **options)
        if kind == "Embedding":
            return L.Embedding(layer.vocab_size, layer.dim, **options)
        if kind == "Flatten":
            return L.Flatten(**options)
        if kind == "Reshape":
            return L.Reshape(tuple(node.output_shape), **options)
        if kind in ACTIVATIONS:
            return (
                L.Softmax(axis=-1, **options)
                if kind == "Softmax"
                else L.Activation(ACTIVATIONS[kind], **options)
            )
        if hasattr(layer, "keras_layer"):
            native = layer.keras_layer(tuple(node.input_shape), **options)
            native._crosstrain_plugin = True
            return native
        raise UnsupportedFeature(
            self.backend, f"layer {kind} ({node.path}) has no Keras implementation"
        )

    def _add(self, node: LayerNode, pname: str, variable: Any) -> None:
        spec = node.layer.params(node.input_shape)[pname]
        self.refs.append(
            ParamRef(f"{node.name}/{pname}", variable, tuple(spec.shape), spec.trainable)
        )

    def _refs(self, node: LayerNode, native: Any) -> None:
        specs = node.layer.params(node.input_shape)
        if not specs:
            return
        if getattr(native, "_crosstrain_plugin", False):
            weights = list(native.weights)
            if len(weights) != len(specs):
                raise UnsupportedFeature(
                    self.backend,
                    f"layer {node.layer.type} ({node.path}): its keras_layer has "
                    f"{len(weights)} weights, params() declares {len(specs)}",
                )
            for pname, variable in zip(specs, weights, strict=True):
                self._add(node, pname, variable)
            return
        for pname in specs:
            self._add(node, pname, getattr(native, pname))

    def _refs_mha(self, node: LayerNode, native: Any) -> None:
        dense = {
            "query": native._query_dense,
            "key": native._key_dense,
            "value": native._value_dense,
            "output": native._output_dense,
        }
        for pname in node.layer.params(node.input_shape):
            proj, _, kind = pname.partition("/")
            self._add(node, pname, getattr(dense[proj], kind))


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
    dtype_in = model.resolved_input_dtype
    if dtype_in == "int64" and keras.backend.backend() == "jax":
        dtype_in = "int32"  # jax keeps 32-bit integers unless x64 is enabled
    inputs = keras.Input(shape=tuple(model.input_shape), dtype=dtype_in, name="inputs")
    builder = _Builder(dtype, seed, backend)
    outputs = builder.chain(nodes, inputs)
    native = keras.Model(inputs, outputs, name="crosstrain")
    return native, builder.refs
