"""`ArrayLayer`: a layer written once against the array API, as a torch `nn.Module`.

Each canonical parameter is an `nn.Parameter` (a buffer when not trainable) named after it,
`/` written as `__` (torch forbids `.` in names); `canonical` maps the names back for
`model.py`. The forward is the layer's own `forward` called with the `array_api_compat.torch`
namespace, so autograd, autocast and `torch.compile` see plain torch operations.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import torch
from crosstrain.nn.layers import Layer, Shape
from torch import nn


def attribute_name(canonical: str) -> str:
    """The module attribute of a canonical parameter name (`query/kernel` → `query__kernel`)."""
    return canonical.replace("/", "__")


class ArrayLayer(nn.Module):
    """A crosstrain `Layer` with an array-API `forward`, as an `nn.Module` on channels-last data.

    Args:
        layer: the layer (its `params` and `forward` are all that is used).
        input_shape: the per-sample input shape.
        factory: `device` and `dtype` of the parameters.
    """

    def __init__(self, layer: Layer, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.layer = layer
        self.canonical: dict[str, tuple[str, str]] = {}
        for name, spec in layer.params(tuple(input_shape)).items():
            attr = attribute_name(name)
            tensor = torch.empty(spec.shape, **factory)
            if spec.trainable:
                self.register_parameter(attr, nn.Parameter(tensor))
            else:
                self.register_buffer(attr, tensor)
            self.canonical[name] = (attr, "same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = {}
        for name, (attr, _) in self.canonical.items():
            value = getattr(self, attr)
            if x.is_floating_point() and value.dtype != x.dtype:
                value = value.to(x.dtype)
            params[name] = value
        return self.layer.forward(xp, params, x, self.training, None)

    def extra_repr(self) -> str:
        return f"{self.layer.type}, array API"
