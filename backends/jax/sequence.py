"""nnx modules of the sequence layers: attention on `jax.nn.dot_product_attention` (grouped
heads, rotary positions), PositionEmbedding, RMSNorm, GatedMLP, GELU (exact or tanh).

Built like the modules of `model.py`: `Module(layer, shape, name, build)`, variables named
after the canonical parameters. The rotary tables are core's numpy arrays, constants of the
trace (not variables, so not in the state).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from crosstrain.nn.dropout import name_salt, shared_dropout
from crosstrain.nn.layers import Shape, apply_rope, rope_tables
from flax import nnx
from jax import Array

from .model import Key, _Build, _Projection


class Attention(nnx.Module):
    """MultiHeadSelfAttention. Without dropout in training, `jax.nn.dot_product_attention`
    (the XLA or cuDNN fused kernel; query head `h` reads key/value head `h // groups`); with
    it, the same math written out, dropping attention weights with the step's PRNG key."""

    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.query = _Projection(f"{name}/query", layer.use_bias, build)
        self.key = _Projection(f"{name}/key", layer.use_bias, build)
        self.value = _Projection(f"{name}/value", layer.use_bias, build)
        self.output = _Projection(f"{name}/output", layer.use_bias, build)
        self.heads, self.kv_heads, self.head_dim = layer.num_heads, layer.kv_heads, layer.head_dim
        self.causal, self.rope_theta, self.dropout = layer.causal, layer.rope_theta, layer.dropout
        self.index = build.next_dropout() if layer.dropout else -1
        self.salt = name_salt(name) if build.shared_masks else None

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        batch, seq, _ = x.shape

        def split(projection: _Projection, heads: int) -> Array:
            # straight to (batch, seq, heads, head_dim): a matmul then a reshape made XLA
            # (CPU) lay the heads out again, 1.28x flax's forward+backward (benchmarks.layers)
            kernel = projection.kernel[...].reshape(-1, heads, self.head_dim)
            y = jnp.einsum("bsf,fhd->bshd", x, kernel)
            if projection.bias is None:
                return y
            return y + projection.bias[...].reshape(heads, self.head_dim)

        q = split(self.query, self.heads)
        k, v = split(self.key, self.kv_heads), split(self.value, self.kv_heads)
        if self.rope_theta is not None:
            cos, sin = (
                jnp.asarray(t, x.dtype) for t in rope_tables(seq, self.head_dim, self.rope_theta)
            )
            q, k = apply_rope(jnp, q, cos, sin), apply_rope(jnp, k, cos, sin)
        scale = 1.0 / math.sqrt(self.head_dim)
        if train and self.dropout and key is not None:
            mixed = self._with_dropout(q, k, v, scale, key)
        else:
            mixed = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=self.causal)
        return self.output(mixed.reshape(batch, seq, self.heads * self.head_dim))

    def _with_dropout(self, q: Array, k: Array, v: Array, scale: float, key: Array) -> Array:
        repeat = self.heads // self.kv_heads
        k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
        if self.causal:
            seq = q.shape[1]
            scores = jnp.where(jnp.tril(jnp.ones((seq, seq), bool)), scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        if self.salt is not None:
            weights = shared_dropout(jnp, weights, key, self.salt, self.dropout)
        else:
            keep = jax.random.bernoulli(
                jax.random.fold_in(key, self.index), 1.0 - self.dropout, weights.shape
            )
            weights = jnp.where(keep, weights / (1.0 - self.dropout), 0.0)
        weights = weights.astype(q.dtype)
        return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class PositionEmbedding(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.embeddings = build.param(f"{name}/embeddings")

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        table = self.embeddings[...][: x.shape[1]].astype(x.dtype)
        return jnp.broadcast_to(table[None], x.shape)


class RMSNorm(nnx.Module):
    """Statistics in float32 (as Llama's), the result in the input's dtype."""

    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.scale = build.param(f"{name}/scale")
        self.epsilon = layer.epsilon

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
        return (normed * self.scale[...].astype(jnp.float32)).astype(x.dtype)


GATED_ACTIVATIONS = {"silu": jax.nn.silu, "gelu": lambda x: jax.nn.gelu(x, approximate=False)}


class GatedMLP(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.gate = _Projection(f"{name}/gate", layer.use_bias, build)
        self.up = _Projection(f"{name}/up", layer.use_bias, build)
        self.down = _Projection(f"{name}/down", layer.use_bias, build)
        self.activation = layer.activation

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return self.down(GATED_ACTIVATIONS[self.activation](self.gate(x)) * self.up(x))


class GELU(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.approximate = layer.approximate

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return jax.nn.gelu(x, approximate=self.approximate)
