"""The neutral layer vocabulary: options, shape inference, canonical parameters, numpy forward.

Every backend builds its native layers from these objects and must reproduce `forward`.
Option names follow Keras where Keras has the layer.

Example:
    >>> from crosstrain import layers
    >>> layers.Dense(10).output_shape((64,))
    (10,)
"""

from __future__ import annotations

from crosstrain.nn.layers import (
    attention,
    basic,
    composite,
    merge,
    norm,
    pooling,
    recurrent,
    sequence,
    spatial,
)
from crosstrain.nn.layers._base import Layer, ParamSpec, Shape, as_pair, same_padding, window_output
from crosstrain.nn.layers._support import Route, layer_route, supported_layer_types
from crosstrain.nn.layers.attention import MultiHeadSelfAttention, apply_rope, rope_tables
from crosstrain.nn.layers.basic import (
    GELU,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    ReLU,
    Reshape,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from crosstrain.nn.layers.composite import (
    AnyLayer,
    Residual,
    Sequential,
    child_name,
    child_params,
)
from crosstrain.nn.layers.merge import Add, Concatenate, Multiply
from crosstrain.nn.layers.norm import BatchNorm, LayerNorm
from crosstrain.nn.layers.pooling import AvgPool1D, GlobalMaxPool, MaxPool1D, UpSampling2D
from crosstrain.nn.layers.recurrent import GRU, LSTM
from crosstrain.nn.layers.sequence import GatedMLP, PositionEmbedding, RMSNorm
from crosstrain.nn.layers.spatial import (
    AvgPool2D,
    Conv1D,
    Conv2D,
    Conv2DTranspose,
    GlobalAvgPool,
    MaxPool2D,
)

BUILTIN_LAYERS: tuple[type[Layer], ...] = tuple(
    value
    for module in (basic, spatial, norm, composite, attention, sequence, recurrent, pooling, merge)
    for value in vars(module).values()
    if isinstance(value, type)
    and issubclass(value, Layer)
    and value.__module__ == module.__name__
    and not value.__name__.startswith("_")
)
"""Every public Layer class defined in the modules of this package, found rather than listed:
a new built-in layer is one class in one of them (the registry and the conformance suite pick
it up from here)."""

__all__ = [
    "Add",
    "AnyLayer",
    "AvgPool1D",
    "AvgPool2D",
    "BUILTIN_LAYERS",
    "BatchNorm",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Conv2DTranspose",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GELU",
    "GRU",
    "GatedMLP",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "LSTM",
    "Layer",
    "LayerNorm",
    "MaxPool1D",
    "MaxPool2D",
    "MultiHeadSelfAttention",
    "Multiply",
    "ParamSpec",
    "PositionEmbedding",
    "RMSNorm",
    "ReLU",
    "Reshape",
    "Route",
    "Residual",
    "Sequential",
    "Shape",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "UpSampling2D",
    "apply_rope",
    "as_pair",
    "child_name",
    "child_params",
    "layer_route",
    "rope_tables",
    "same_padding",
    "supported_layer_types",
    "window_output",
]
