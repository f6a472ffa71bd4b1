"""torch modules of LSTM and GRU on torch's own recurrent kernels (`torch.lstm`/`torch.gru`, what
`nn.LSTM`/`nn.GRU` call: cuDNN on CUDA, the fused CPU kernel otherwise).

The parameters are kept in Keras's canonical layout (`kernel (features, gates*units)` ...);
each forward hands the kernel torch's layout: transposed, and for the GRU the gate blocks
reordered from Keras's update, reset, candidate to torch's reset, update, new. The LSTM's
second bias (torch has two, Keras one) is a zero buffer.

A stateful layer (`trainer.stateful`) keeps its carried state in buffers `state_h` (and
`state_c`), `(batch_size, units)`: every forward starts from their first rows and writes its
final state back into them, detached (as BatchNorm updates its moving statistics in place);
a prediction (`predicting`) starts from zeros and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from crosstrain.nn.layers import Shape
from torch import nn

from .layers import _param

PREDICTING = [False]
"""Set by `predict_step`: a prediction starts from zeros and leaves the carried state alone."""


@contextmanager
def predicting() -> Iterator[None]:
    PREDICTING[0] = True
    try:
        yield
    finally:
        PREDICTING[0] = False


class _Recurrent(nn.Module):
    canonical = {
        "kernel": ("kernel", "same"),
        "recurrent_kernel": ("recurrent_kernel", "same"),
        "bias": ("bias", "same"),
    }

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        specs = layer.params(tuple(input_shape))
        for name in ("kernel", "recurrent_kernel", "bias"):
            setattr(self, name, _param(specs[name].shape, factory))
        self.units, self.return_sequences = layer.units, layer.return_sequences
        self.state_names = layer.state_names if layer.state_batch else ()
        for name in self.state_names:
            self.register_buffer(name, torch.zeros(specs[name].shape, **factory))

    def _initial(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The initial states `(1, batch, units)`: zeros, or the carried ones (copies)."""
        if not self.state_names or PREDICTING[0]:
            return [x.new_zeros((1, x.shape[0], self.units))] * 2
        return [
            getattr(self, n)[: x.shape[0]].to(x.dtype, copy=True)[None] for n in self.state_names
        ]

    def _carry(self, *last: torch.Tensor) -> None:
        if PREDICTING[0]:
            return
        with torch.no_grad():
            for name, value in zip(self.state_names, last, strict=False):
                state = getattr(self, name)
                state[: value.shape[1]] = value[0].detach().to(state.dtype)

    def _finish(self, outputs: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return outputs if self.return_sequences else last[0]


class LSTM(_Recurrent):
    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__(layer, input_shape, factory)
        self.register_buffer("zero_bias", torch.zeros(4 * layer.units, **factory), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = [
            self.kernel.t().to(x.dtype),
            self.recurrent_kernel.t().to(x.dtype),
            self.bias.to(x.dtype),
            self.zero_bias.to(x.dtype),
        ]
        h0, c0 = self._initial(x)
        outputs, h, c = torch.lstm(x, (h0, c0), weights, True, 1, 0.0, self.training, False, True)
        self._carry(h, c)
        return self._finish(outputs, h)


def _keras_to_torch_gates(tensor: torch.Tensor) -> torch.Tensor:
    """Gate blocks on the last axis: Keras (update, reset, candidate) → torch (reset, update, new)."""
    update, reset, candidate = tensor.chunk(3, dim=-1)
    return torch.cat((reset, update, candidate), dim=-1)


class GRU(_Recurrent):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = [
            _keras_to_torch_gates(self.kernel).t().to(x.dtype),
            _keras_to_torch_gates(self.recurrent_kernel).t().to(x.dtype),
            _keras_to_torch_gates(self.bias[0]).to(x.dtype),
            _keras_to_torch_gates(self.bias[1]).to(x.dtype),
        ]
        outputs, h = torch.gru(
            x, self._initial(x)[0], weights, True, 1, 0.0, self.training, False, True
        )
        self._carry(h)
        return self._finish(outputs, h)
