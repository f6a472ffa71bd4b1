"""`ArrayLayer`: a layer written once against the array API, as a flax nnx module.

Each canonical parameter is an `nnx.Param` (an `nnx.BatchStat` when not trainable) at the
attribute path of its canonical name (`query/kernel` → `self.query["kernel"]`), so
`model.canonical_name` maps it back like any built-in variable. The forward is the layer's own
`forward` called with `jax.numpy` (an array API namespace), traced into the backend's
`jax.jit` step like the built-in modules.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from crosstrain.nn.layers import Layer, Shape
from flax import nnx
from jax import Array


class ArrayLayer(nnx.Module):
    """A crosstrain `Layer` with an array-API `forward`, as an nnx module.

    Args:
        layer: the layer (its `params` and `forward` are all that is used).
        shape: the per-sample input shape.
        name: the layer's canonical name (prefix of its parameters' names).
        build: the model build (initial values by canonical name).
    """

    def __init__(self, layer: Layer, shape: Shape, name: str, build: Any):
        self.spec = layer
        self.names: tuple[str, ...] = ()
        groups: dict[str, dict[str, nnx.Variable]] = {}
        for pname, spec in layer.params(tuple(shape)).items():
            kind = nnx.Param if spec.trainable else nnx.BatchStat
            variable = build.param(f"{name}/{pname}", kind)
            head, _, rest = pname.partition("/")
            if rest:
                groups.setdefault(head, {})[rest] = variable
            else:
                setattr(self, pname, variable)
            self.names += (pname,)
        for head, members in groups.items():
            setattr(self, head, nnx.Dict(members))

    def _value(self, pname: str) -> Array:
        head, _, rest = pname.partition("/")
        variable = getattr(self, head)[rest] if rest else getattr(self, head)
        return variable[...]

    def __call__(self, x: Array, train: bool = False, key: Any = None) -> Array:
        floating = jnp.issubdtype(x.dtype, jnp.floating)
        params = {}
        for pname in self.names:
            value = self._value(pname)
            params[pname] = value.astype(x.dtype) if floating else value
        return self.spec.forward(jnp, params, x, train, None)
