"""Keras builders of MaxPool1D/AvgPool1D, GlobalMaxPool and UpSampling2D: stock Keras layers
(Conv2DTranspose is built with the convolutions in `model.py`)."""

from __future__ import annotations

from typing import Any

import keras
from crosstrain.nn.model import LayerNode


def pool_1d(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    """The 2-D pool on `(length, 1, channels)`, as torch and jax build it: Keras's torch engine
    counts padded cells in a `same` AveragePooling1D (its 2-D pool does not)."""
    flat = node.layer.as_2d()
    name, (length, channels) = options["name"], node.input_shape
    cls = keras.layers.MaxPooling2D if flat.type == "MaxPool2D" else keras.layers.AveragePooling2D
    x = keras.layers.Reshape((length, 1, channels), name=f"{name}__2d", dtype=builder.dtype)(x)
    y = cls(flat.pool_size, strides=flat.strides, padding=flat.padding, **options)(x)
    out = node.layer.output_shape(node.input_shape)
    return keras.layers.Reshape(out, name=f"{name}__1d", dtype=builder.dtype)(y)


def global_max_pool(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    rank = len(node.input_shape)
    if rank == 3:
        return keras.layers.GlobalMaxPooling2D(**options)(x)
    if rank != 2:
        x = keras.layers.Reshape(
            (-1, node.input_shape[-1]), name=f"{options['name']}__flat", dtype=builder.dtype
        )(x)
    return keras.layers.GlobalMaxPooling1D(**options)(x)


def upsampling(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    return keras.layers.UpSampling2D(node.layer.size, interpolation="nearest", **options)(x)
