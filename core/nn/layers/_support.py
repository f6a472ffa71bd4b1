"""Which implementation a backend uses for a layer, and so which layer types it supports.

Every backend keeps one table of its own built-in implementations (layer type → name of the
builder in its layer module, so the table is read without importing the framework). A layer
is then built, in this order of preference, by:

1. `native`: the layer class's own method for the backend (`torch_module`, `jax_module`,
   `keras_layer`), a plugin's optional speed-up;
2. `table`: the backend's built-in implementation of the type;
3. `array`: the backend's generic wrapper of an array-API `forward` (`array_layer.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Route = Literal["native", "table", "array"]


def layer_route(layer: Any, table: Mapping[str, Any], native_method: str) -> Route | None:
    """How a backend with `table` and `native_method` builds `layer` (None: it cannot)."""
    if callable(getattr(layer, native_method, None)):
        return "native"
    if layer.type in table:
        return "table"
    if has_array_forward(type(layer)):
        return "array"
    return None


def has_array_forward(layer_class: type) -> bool:
    """Whether a layer class defines its own `forward` and declares it array-API."""
    from crosstrain.nn.layers._base import Layer

    return (
        bool(getattr(layer_class, "array_api", False))
        and getattr(layer_class, "forward", Layer.forward) is not Layer.forward
    )


def supported_layer_types(table: Mapping[str, Any], native_method: str) -> frozenset[str]:
    """A backend's declared layer types: its table's keys plus every registered layer type
    it can build (a native method or an array-API `forward`)."""
    from crosstrain.plugin.registry import get_registry

    layers = get_registry().layers
    routed = {
        name
        for name in layers.names()
        if callable(getattr(layers.get(name), native_method, None))
        or has_array_forward(layers.get(name))
    }
    return frozenset(table) | frozenset(routed)
