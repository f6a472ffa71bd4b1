"""Keras builders of LSTM and GRU: Keras's own layers (stock, so exports stay stock), whose
cell weights `kernel`, `recurrent_kernel`, `bias` are the canonical parameters as they are."""

from __future__ import annotations

from typing import Any

import keras
from crosstrain.nn.model import LayerNode


def recurrent(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer = node.layer
    cls = keras.layers.LSTM if layer.type == "LSTM" else keras.layers.GRU
    extra = {"reset_after": True} if layer.type == "GRU" else {}
    native = cls(layer.units, return_sequences=layer.return_sequences, **extra, **options)
    y = native(x)
    for pname in layer.params(node.input_shape):
        builder._add(node, pname, getattr(native.cell, pname))
    return y
