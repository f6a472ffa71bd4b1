"""nnx modules of MaxPool1D/AvgPool1D (the 2-D pools of `model.py` on `(N, L, 1, C)`),
GlobalMaxPool and UpSampling2D (`jnp.repeat`)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from crosstrain.nn.layers import Shape, as_pair
from flax import nnx
from jax import Array

from .model import Key, Pool2D, _Build


class Pool1D(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.pool = Pool2D(layer.as_2d(), (shape[0], 1, shape[1]), name, build)

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return self.pool(x[:, :, None, :])[:, :, 0, :]


class GlobalMaxPool(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        pass

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))


class UpSampling2D(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.size = as_pair(layer.size)

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return jnp.repeat(jnp.repeat(x, self.size[0], axis=1), self.size[1], axis=2)
