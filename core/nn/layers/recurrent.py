"""Recurrent layers with Keras's arguments, gate order and canonical parameters: LSTM, GRU.

LSTM: `kernel (features, 4*units)`, `recurrent_kernel (units, 4*units)`, `bias (4*units,)`,
gates in Keras's order input, forget, cell, output. GRU (Keras's default `reset_after=True`,
which is also torch's `nn.GRU`): `kernel (features, 3*units)`, `recurrent_kernel (units,
3*units)`, `bias (2, 3*units)` (input and recurrent biases), gates update, reset, candidate.
Both take `(sequence, features)` and return the last state `(units,)` or, with
`return_sequences`, every state `(sequence, units)`; the state starts at zero. Initial values:
Glorot for both kernels and zero biases (Keras uses an orthogonal recurrent kernel and a
forget-gate bias of one; crosstrain's seeded initialisers have neither).

With `trainer.stateful` (crosstrain.train.stateful) each layer also holds its carried state as
non-trainable canonical parameters `state_h` (and the LSTM's `state_c`), `(batch_size, units)`
zeros: the batch size is the spec's `data.batch_size`, set on the layer when the spec is
validated (`state_batch`), so the state is in the canonical state and the checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from crosstrain.nn.initializers import InitializerOption
from crosstrain.nn.layers._base import Layer, ParamSpec, Shape
from pydantic import Field, PositiveInt, PrivateAttr


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Recurrent(Layer):
    positional: ClassVar = ("units",)
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    gates: ClassVar[int] = 4
    units: PositiveInt
    return_sequences: bool = False
    kernel_initializer: InitializerOption = None
    recurrent_initializer: InitializerOption = Field(
        None, description="default glorot_uniform (Keras: orthogonal)"
    )
    bias_initializer: InitializerOption = None
    state_names: ClassVar[tuple[str, ...]] = ("state_h",)
    _state_batch: int | None = PrivateAttr(None)

    @property
    def state_batch(self) -> int | None:
        """Rows of the carried state (`trainer.stateful`), or None: the state starts at zero."""
        return self._state_batch

    def carry_state(self, batch_size: int | None) -> None:
        """Makes the layer stateful for batches of `batch_size` rows (None: not stateful)."""
        self._state_batch = batch_size

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2:
            raise ValueError(f"{self.type} expects (sequence, features), got {input_shape}")
        if self.return_sequences:
            return (input_shape[0], self.units)
        return (self.units,)

    def _bias_shape(self) -> Shape:
        return (self.gates * self.units,)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        features, width = input_shape[-1], self.gates * self.units
        return {
            "kernel": ParamSpec(
                (features, width),
                self.initializer("kernel_initializer", "glorot_uniform"),
                (features, width),
            ),
            "recurrent_kernel": ParamSpec(
                (self.units, width),
                self.initializer("recurrent_initializer", "glorot_uniform"),
                (self.units, width),
            ),
            "bias": ParamSpec(self._bias_shape(), self.initializer("bias_initializer", "zeros")),
        } | {
            name: ParamSpec((self._state_batch, self.units), "zeros", trainable=False)
            for name in (self.state_names if self._state_batch else ())
        }

    def forward_flops(self, input_shape: Shape) -> int:
        seq, features = input_shape
        return 2 * seq * (features + self.units) * self.gates * self.units

    def step(self, params: dict[str, np.ndarray], x: np.ndarray, state: Any) -> tuple[Any, Any]:
        """One time step of the numpy reference: `(output, next state)`."""
        raise NotImplementedError

    def initial_state(self, batch: int, dtype: Any) -> Any:
        return np.zeros((batch, self.units), dtype)

    def forward(self, xp, params, x, training=False, rng=None):
        state = self.initial_state(x.shape[0], np.float64)
        outputs = []
        for t in range(x.shape[1]):
            out, state = self.step(params, x[:, t].astype(np.float64), state)
            outputs.append(out)
        y = np.stack(outputs, axis=1) if self.return_sequences else outputs[-1]
        return y.astype(x.dtype)


class LSTM(_Recurrent):
    """Long short-term memory (Keras's `LSTM`, torch's `nn.LSTM`)."""

    type: Literal["LSTM"] = "LSTM"
    state_names: ClassVar[tuple[str, ...]] = ("state_h", "state_c")
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "LSTM", "units": 4}, "input_shape": [5, 3]},
        {
            "id": "LSTM-sequences",
            "layer": {"type": "LSTM", "units": 3, "return_sequences": True},
            "input_shape": [4, 2],
            "extended": True,
        },
    ]

    def initial_state(self, batch: int, dtype: Any) -> Any:
        return np.zeros((batch, self.units), dtype), np.zeros((batch, self.units), dtype)

    def step(self, params, x, state):
        h, c = state
        z = x @ params["kernel"] + h @ params["recurrent_kernel"] + params["bias"]
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return h, (h, c)


class GRU(_Recurrent):
    """Gated recurrent unit with Keras's `reset_after=True` (the reset gate multiplies the
    recurrent candidate after its bias), as Keras's `GRU` and torch's `nn.GRU` compute it."""

    type: Literal["GRU"] = "GRU"
    gates: ClassVar[int] = 3
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "GRU", "units": 4, "return_sequences": True}, "input_shape": [5, 3]}
    ]

    def _bias_shape(self) -> Shape:
        return (2, 3 * self.units)

    def step(self, params, x, state):
        xz, xr, xh = np.split(x @ params["kernel"] + params["bias"][0], 3, axis=-1)
        hz, hr, hh = np.split(state @ params["recurrent_kernel"] + params["bias"][1], 3, axis=-1)
        z, r = _sigmoid(xz + hz), _sigmoid(xr + hr)
        h = z * state + (1.0 - z) * np.tanh(xh + r * hh)
        return h, h


__all__ = ["GRU", "LSTM"]
