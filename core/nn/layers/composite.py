"""Layers made of other layers: Sequential, Residual."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from crosstrain.nn.layers._base import Layer, Shape
from crosstrain.plugin.registry import get_registry, import_reference
from pydantic import Field, WrapValidator
from pydantic_core import PydanticCustomError


def _validate_layer(value: Any, handler: Any) -> Layer:
    return validate_layer(value)


def validate_layer(value: Any) -> Layer:
    """A Layer from a Layer or a `{type: ...}` mapping, its type looked up in the registry's
    layer table (plugins' layers included); used by the spec's layer lists."""
    registry = get_registry()
    if isinstance(value, Layer):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "layer",
            "expected a layer mapping with a 'type' key, got {got}",
            {"got": repr(value)},
        )
    if "type" not in value:
        raise PydanticCustomError(
            "layer",
            "a layer needs a 'type' (one of {known})",
            {"known": ", ".join(registry.layers.names())},
        )
    layer_class = registry.layers.find(value["type"])
    if layer_class is None and ":" in str(value["type"]):
        layer_class = _layer_reference(str(value["type"]))
        value = {**value, "type": layer_class.model_fields["type"].default}
    if layer_class is None:
        raise PydanticCustomError(
            "layer", "{message}", {"message": registry.layers.unknown(value["type"])}
        )
    return layer_class.model_validate(value)


def _layer_reference(reference: str) -> type:
    """The Layer class a `package.module:Class` layer type names, registered under its own
    type name (so the validated spec, and a checkpoint's copy of it, name no module)."""
    registry = get_registry()
    try:
        layer_class = import_reference(reference, "layer type")
    except ImportError as err:
        raise PydanticCustomError("layer", "{message}", {"message": str(err)}) from None
    if not (isinstance(layer_class, type) and issubclass(layer_class, Layer)):
        raise PydanticCustomError(
            "layer",
            "{reference} is not a crosstrain.nn.layers.Layer subclass",
            {"reference": reference},
        )
    name = layer_class.model_fields["type"].default
    if registry.layers.find(name) is not layer_class:
        with registry.owner("spec"):
            registry.layers.add(layer_class)
    return layer_class


AnyLayer = Annotated[Any, WrapValidator(_validate_layer)]
"""A layer given as a dict (`{type: Dense, units: 8}`) or a Layer object, checked against the registry."""


def child_name(index: int, layer: Layer) -> str:
    """Canonical name of a child: its `name`, else `<type in lower case>_<position>`."""
    return layer.name or f"{layer.type.lower()}_{index}"


def child_params(params: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries of `params` under `prefix/`, with the prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in params.items() if k.startswith(prefix + "/")}


def sequence_forward(layers: list[Layer], params, x, training=False, rng=None, xp=np):
    """Forward of a chain of layers whose parameters are named by `child_name` (numpy
    reference unless `xp` says otherwise)."""
    for index, layer in enumerate(layers):
        x = layer.forward(xp, child_params(params, child_name(index, layer)), x, training, rng)
    return x


def sequence_shape(layers: list[Layer], shape: Shape) -> Shape:
    for layer in layers:
        shape = layer.output_shape(shape)
    return shape


class Sequential(Layer):
    """Applies its layers one after another."""

    positional: ClassVar = ("layers",)
    type: Literal["Sequential"] = "Sequential"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "layer": {
                "type": "Sequential",
                "layers": [{"type": "Dense", "units": 5}, {"type": "Tanh"}],
            },
            "input_shape": [6],
            "extended": True,
        }
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    layers: list[AnyLayer] = Field(min_length=1)

    def children(self) -> list[Layer]:
        return list(self.layers)

    def output_shape(self, input_shape: Shape) -> Shape:
        return sequence_shape(self.layers, input_shape)

    def forward(self, xp, params, x, training=False, rng=None):
        return sequence_forward(self.layers, params, x, training, rng, xp)


class Residual(Sequential):
    """`x + layers(x)`; the layers must keep the shape."""

    type: Literal["Residual"] = "Residual"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "layer": {
                "type": "Residual",
                "layers": [{"type": "Dense", "units": 6}, {"type": "ReLU"}],
            },
            "input_shape": [6],
        }
    ]

    def output_shape(self, input_shape: Shape) -> Shape:
        inner = sequence_shape(self.layers, input_shape)
        if inner != tuple(input_shape):
            raise ValueError(f"Residual layers change the shape {tuple(input_shape)} to {inner}")
        return inner

    def forward(self, xp, params, x, training=False, rng=None):
        return x + sequence_forward(self.layers, params, x, training, rng, xp)
