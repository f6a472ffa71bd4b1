"""Keras builders of MaxPool1D/AvgPool1D, GlobalMaxPool and UpSampling2D: stock Keras layers
(Conv2DTranspose is built with the convolutions in `model.py`)."""

from __future__ import annotations

from typing import Any

import keras
from crosstrain.nn.model import LayerNode


def pool_1d(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer = node.layer
    cls = keras.layers.MaxPooling1D if layer.type == "MaxPool1D" else keras.layers.AveragePooling1D
    return cls(layer.pool_size, strides=layer.strides, padding=layer.padding, **options)(x)


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
