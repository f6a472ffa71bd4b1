"""Keras builders of the sequence layers, called like the builders of `model.py`:
`(builder, node, x, options) -> output`.

Stock Keras layers where Keras has the layer (so `.keras` exports stay stock): classic
MultiHeadSelfAttention is `keras.layers.MultiHeadAttention` (whose call runs
`keras.ops.dot_product_attention`), RMSNorm `keras.layers.RMSNormalization`, GatedMLP three
`Dense` and a `Multiply`. Attention with grouped key/value heads, rotary positions or dropout
is `SelfAttention` (below, on `keras.ops.dot_product_attention`), GELU's tanh form
`ApproximateGELU`; both are registered serializable under the `crosstrain` package.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from crosstrain.nn.layers import apply_rope, rope_tables
from crosstrain.nn.model import LayerNode

from .xp import KERAS_OPS


def attention(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer = node.layer
    if not layer.fused_plain:
        native = SelfAttention(
            layer.num_heads,
            layer.kv_heads,
            layer.head_dim,
            causal=layer.causal,
            use_bias=layer.use_bias,
            rope_theta=layer.rope_theta,
            dropout=layer.dropout,
            seed=builder.seed,
            **options,
        )
        y = native(x)
        for pname in layer.params(node.input_shape):
            builder._add(node, pname, native.weights_by_name[pname])
        return y
    native = keras.layers.MultiHeadAttention(
        layer.num_heads, layer.head_dim, use_bias=layer.use_bias, flash_attention=False, **options
    )
    y = native(x, x, use_causal_mask=layer.causal)
    dense = {
        "query": native._query_dense,
        "key": native._key_dense,
        "value": native._value_dense,
        "output": native._output_dense,
    }
    for pname in layer.params(node.input_shape):
        proj, _, kind = pname.partition("/")
        builder._add(node, pname, getattr(dense[proj], kind))
    return y


@keras.saving.register_keras_serializable(package="crosstrain")
class SelfAttention(keras.layers.Layer):
    """Self-attention with `num_kv_heads` grouped key/value heads (repeated to every query head
    before the kernel: TensorFlow's does not group) and rotary positions, on
    `keras.ops.dot_product_attention`; weights in the canonical layout (`query__kernel`
    `(features, heads*head_dim)` ...). With dropout in training the weights are computed and
    dropped explicitly."""

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        causal: bool = False,
        use_bias: bool = True,
        rope_theta: float | None = None,
        dropout: float = 0.0,
        seed: int | None = None,
        **options: Any,
    ):
        super().__init__(**options)
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.causal, self.use_bias, self.rope_theta = causal, use_bias, rope_theta
        self.dropout, self.seed = dropout, seed
        self.seed_generator = keras.random.SeedGenerator(seed) if dropout else None
        self.weights_by_name: dict[str, Any] = {}
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def build(self, input_shape: Any) -> None:
        features = input_shape[-1]
        inner, kv_inner = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        shapes = {"query": (features, inner), "key": (features, kv_inner)}
        shapes["value"], shapes["output"] = shapes["key"], (inner, features)
        for proj, shape in shapes.items():
            self.weights_by_name[f"{proj}/kernel"] = self.add_weight(
                name=f"{proj}__kernel", shape=shape, initializer="zeros"
            )
            if self.use_bias:
                self.weights_by_name[f"{proj}/bias"] = self.add_weight(
                    name=f"{proj}__bias", shape=(shape[1],), initializer="zeros"
                )

    def _project(self, x: Any, name: str, heads: int | None = None) -> Any:
        y = keras.ops.matmul(x, keras.ops.cast(self.weights_by_name[f"{name}/kernel"], x.dtype))
        if self.use_bias:
            y = y + keras.ops.cast(self.weights_by_name[f"{name}/bias"], x.dtype)
        if heads is None:
            return y
        return keras.ops.reshape(y, (-1, y.shape[1], heads, self.head_dim))

    def call(self, x: Any, training: bool | None = None) -> Any:
        q = self._project(x, "query", self.num_heads)
        k, v = (
            self._project(x, "key", self.num_kv_heads),
            self._project(x, "value", self.num_kv_heads),
        )
        seq = x.shape[1]
        if self.rope_theta is not None:
            if seq not in self._tables:
                self._tables[seq] = rope_tables(seq, self.head_dim, self.rope_theta)
            cos, sin = (keras.ops.cast(t, x.dtype) for t in self._tables[seq])
            q, k = apply_rope(KERAS_OPS, q, cos, sin), apply_rope(KERAS_OPS, k, cos, sin)
        if self.num_kv_heads != self.num_heads:  # not every engine's kernel groups heads
            repeat = self.num_heads // self.num_kv_heads
            k, v = keras.ops.repeat(k, repeat, axis=2), keras.ops.repeat(v, repeat, axis=2)
        scale = 1.0 / math.sqrt(self.head_dim)
        if training and self.dropout:
            mixed = self._with_dropout(q, k, v, scale)
        else:
            mixed = keras.ops.dot_product_attention(q, k, v, scale=scale, is_causal=self.causal)
        mixed = keras.ops.reshape(mixed, (-1, seq, self.num_heads * self.head_dim))
        return self._project(mixed, "output")

    def _with_dropout(self, q: Any, k: Any, v: Any, scale: float) -> Any:
        scores = keras.ops.cast(keras.ops.einsum("bqhd,bkhd->bhqk", q, k), "float32") * scale
        if self.causal:
            seq = q.shape[1]
            mask = keras.ops.tril(keras.ops.ones((seq, seq), "bool"))
            scores = keras.ops.where(mask, scores, -np.inf)
        weights = keras.ops.softmax(scores, axis=-1)
        weights = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        return keras.ops.einsum("bhqk,bkhd->bqhd", keras.ops.cast(weights, q.dtype), v)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "causal": self.causal,
            "use_bias": self.use_bias,
            "rope_theta": self.rope_theta,
            "dropout": self.dropout,
            "seed": self.seed,
        }


def rms_norm(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    native = keras.layers.RMSNormalization(axis=-1, epsilon=node.layer.epsilon, **options)
    return builder.apply(node, native, x)


def gated_mlp(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer, name = node.layer, options["name"]
    common = {"use_bias": layer.use_bias, "dtype": options["dtype"]}
    features = node.input_shape[-1]
    dense = {
        "gate": keras.layers.Dense(
            layer.units, activation=layer.activation, name=f"{name}__gate", **common
        ),
        "up": keras.layers.Dense(layer.units, name=f"{name}__up", **common),
        "down": keras.layers.Dense(features, name=f"{name}__down", **common),
    }
    hidden = keras.layers.Multiply(name=f"{name}__gated", dtype=options["dtype"])(
        [dense["gate"](x), dense["up"](x)]
    )
    y = dense["down"](hidden)
    for pname in layer.params(node.input_shape):
        proj, _, kind = pname.partition("/")
        builder._add(node, pname, getattr(dense[proj], kind))
    return y


@keras.saving.register_keras_serializable(package="crosstrain")
class ApproximateGELU(keras.layers.Layer):
    """GELU's tanh form (`keras.activations.gelu(x, approximate=True)`)."""

    def call(self, x: Any) -> Any:
        return keras.activations.gelu(x, approximate=True)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def gelu(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    if node.layer.approximate:
        return ApproximateGELU(**options)(x)
    return keras.layers.Activation("gelu", **options)(x)
