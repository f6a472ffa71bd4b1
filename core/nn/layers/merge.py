"""Layers that merge several inputs into one, used as nodes of a model graph (`model.nodes`):
Add, Multiply, Concatenate (Keras's names and `axis`).

A merge layer's `input_shape` is a tuple of the per-sample shapes of its inputs, in the order
of the node's `inputs:`; `forward` takes the list of batches in that order.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from crosstrain.nn.layers._base import Layer, Shape
from pydantic import Field


class _Merge(Layer):
    merge: ClassVar[bool] = True

    def _shapes(self, input_shape: Any) -> list[Shape]:
        shapes = [tuple(s) for s in input_shape] if _is_shape_list(input_shape) else []
        if len(shapes) < 2:
            raise ValueError(f"{self.type} merges two or more inputs; give it `inputs: [a, b]`")
        return shapes


def _is_shape_list(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(s, (tuple, list)) for s in value)


class Add(_Merge):
    """The element-wise sum of inputs of one shape (Keras `Add`)."""

    type: Literal["Add"] = "Add"

    def output_shape(self, input_shape: Any) -> Shape:
        shapes = self._shapes(input_shape)
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"{self.type} needs inputs of one shape, got {shapes}")
        return shapes[0]

    def forward(self, xp, params, x, training=False, rng=None):
        total = x[0]
        for other in x[1:]:
            total = total + other
        return total


class Multiply(Add):
    """The element-wise product of inputs of one shape (Keras `Multiply`)."""

    type: Literal["Multiply"] = "Multiply"

    def forward(self, xp, params, x, training=False, rng=None):
        total = x[0]
        for other in x[1:]:
            total = total * other
        return total


class Concatenate(_Merge):
    """Inputs joined along `axis` (Keras `Concatenate`: the axis counts the batch axis, so
    `-1`, the default, is the last feature axis and `1` the first; 0, the batch, is refused)."""

    positional: ClassVar = ("axis",)
    type: Literal["Concatenate"] = "Concatenate"
    axis: int = Field(-1, description="the axis joined, counting the batch axis (Keras)")

    def feature_axis(self, rank: int) -> int:
        """The axis within a per-sample shape of `rank` axes."""
        axis = self.axis + rank + 1 if self.axis < 0 else self.axis
        if not 1 <= axis <= rank:
            raise ValueError(
                f"axis {self.axis} is not a feature axis of inputs with {rank} feature axes "
                "(the batch axis 0 cannot be concatenated)"
            )
        return axis - 1

    def output_shape(self, input_shape: Any) -> Shape:
        shapes = self._shapes(input_shape)
        if any(len(s) != len(shapes[0]) for s in shapes):
            raise ValueError(f"Concatenate needs inputs of one rank, got {shapes}")
        axis = self.feature_axis(len(shapes[0]))
        rest = [s[:axis] + s[axis + 1 :] for s in shapes]
        if any(r != rest[0] for r in rest):
            raise ValueError(f"Concatenate needs equal sizes off axis {self.axis}, got {shapes}")
        return (*shapes[0][:axis], sum(s[axis] for s in shapes), *shapes[0][axis + 1 :])

    def forward(self, xp, params, x, training=False, rng=None):
        return xp.concat(list(x), axis=self.feature_axis(x[0].ndim - 1) + 1)
