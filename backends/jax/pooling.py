"""nnx modules of MaxPool1D/AvgPool1D (the 2-D pools of `model.py` on `(N, L, 1, C)`),
GlobalMaxPool, and the upsampling layers UpSampling2D (`jnp.repeat`) and Conv2DTranspose (an
input-dilated `lax.conv_general_dilated`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from crosstrain.nn.layers import Shape, as_pair
from flax import nnx
from jax import Array

from .model import ACTIVATIONS, Key, Pool2D, _Build


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


class Conv2DTranspose(nnx.Module):
    """The gradient of a convolution as a convolution: the input dilated by the strides, the
    kernel flipped with its channel axes swapped, padded so the result has Keras's size."""

    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.kernel = build.param(f"{name}/kernel")
        self.bias = build.param(f"{name}/bias") if layer.use_bias else None
        geometry = layer.geometry(shape)
        self.strides = tuple(s for _, s, _, _ in geometry)
        self.pads = [
            (k - 1 - crop, max(out - 1 - (size - 1) * s + crop, 0))
            for (k, s, out, crop), size in zip(geometry, shape[:2], strict=True)
        ]
        self.out = tuple(out for _, _, out, _ in geometry)
        self.activation = layer.activation

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        rhs = jnp.swapaxes(self.kernel[...][::-1, ::-1], 2, 3)
        y = jax.lax.conv_general_dilated(
            x,
            rhs,
            (1, 1),
            self.pads,
            lhs_dilation=self.strides,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )[:, : self.out[0], : self.out[1]]
        if self.bias is not None:
            y = y + self.bias[...]
        return ACTIVATIONS[self.activation](y)
