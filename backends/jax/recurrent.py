"""nnx modules of LSTM and GRU: one `jax.lax.scan` over time (compiled once whatever the
sequence length; the input projection of every step is one matrix product before the scan).

A stateful layer (`trainer.stateful`) holds its carried state as `nnx.BatchStat` variables
`state_h` (and `state_c`), `(batch_size, units)`, which the jitted step updates as it updates
BatchNorm's moving statistics: the scan starts from their first rows and its final state,
under `stop_gradient`, is written back."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from crosstrain.nn.layers import Shape
from flax import nnx
from jax import Array

from .model import Key, _Build


class _Recurrent(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.kernel = build.param(f"{name}/kernel")
        self.recurrent_kernel = build.param(f"{name}/recurrent_kernel")
        self.bias = build.param(f"{name}/bias")
        self.units, self.return_sequences = layer.units, layer.return_sequences
        self.state_names = layer.state_names if layer.state_batch else ()
        for state in self.state_names:
            setattr(self, state, build.param(f"{name}/{state}", nnx.BatchStat))

    def _initial(self, x: Array) -> list[Array]:
        """The initial states: zeros, or the first rows of the carried ones."""
        if not self.state_names:
            return [jnp.zeros((x.shape[0], self.units), x.dtype)] * 2
        return [getattr(self, n)[...][: x.shape[0]].astype(x.dtype) for n in self.state_names]

    def _scan(self, step: Any, carry: Any, inputs: Any) -> Array:
        """`step` scanned over time of `inputs` (an array or a tuple of them, batch first)."""
        time_major = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), inputs)
        last, outputs = jax.lax.scan(step, carry, time_major)
        last = last if isinstance(last, tuple) else (last,)
        for name, value in zip(self.state_names, last, strict=False):
            state = getattr(self, name)
            new = jax.lax.stop_gradient(value).astype(state[...].dtype)
            state[...] = state[...].at[: value.shape[0]].set(new)
        if self.return_sequences:
            return jnp.swapaxes(outputs, 0, 1)
        return outputs[-1]


class LSTM(_Recurrent):
    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        # one recurrent matrix and one projected input per gate: slicing the gates out of one
        # product inside the scan cost 1.17x flax's LSTMCell forward+backward on CPU
        recurrent = jnp.split(self.recurrent_kernel[...].astype(x.dtype), 4, axis=-1)
        projected = x @ self.kernel[...].astype(x.dtype) + self.bias[...].astype(x.dtype)
        gates = tuple(jnp.split(projected, 4, axis=-1))

        def step(carry: tuple[Array, Array], z: tuple[Array, ...]) -> Any:
            h, c = carry
            i, f, g, o = (zg + h @ r for zg, r in zip(z, recurrent, strict=True))
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        h, c = self._initial(x)
        return self._scan(step, (h, c), gates)


class GRU(_Recurrent):
    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        bias = self.bias[...].astype(x.dtype)
        recurrent = self.recurrent_kernel[...].astype(x.dtype)
        projected = x @ self.kernel[...].astype(x.dtype) + bias[0]

        def step(h: Array, z: Array) -> tuple[Array, Array]:
            xz, xr, xh = jnp.split(z, 3, axis=-1)
            hz, hr, hh = jnp.split(h @ recurrent + bias[1], 3, axis=-1)
            update, reset = jax.nn.sigmoid(xz + hz), jax.nn.sigmoid(xr + hr)
            h = update * h + (1.0 - update) * jnp.tanh(xh + reset * hh)
            return h, h

        return self._scan(step, self._initial(x)[0], projected)
