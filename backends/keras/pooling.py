"""Keras builders of MaxPool1D/AvgPool1D, GlobalMaxPool and the upsampling layers UpSampling2D
and Conv2DTranspose: stock Keras layers."""

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


def conv_transpose(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer = node.layer
    native = keras.layers.Conv2DTranspose(
        layer.filters,
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        activation=layer.activation,
        use_bias=layer.use_bias,
        **options,
    )
    return builder.apply(node, native, x)
