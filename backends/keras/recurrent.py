"""Keras builders of LSTM and GRU: Keras's own layers (stock, so exports stay stock), whose
cell weights `kernel`, `recurrent_kernel`, `bias` are the canonical parameters as they are.

A stateful layer (`trainer.stateful`) is the same Keras layer called with `initial_state` and
`return_state` inside `CarriedState`, which holds the carried state as non-trainable variables
`state_h` (and `state_c`), `(batch_size, units)`, and assigns the final state back (detached),
as BatchNorm assigns its moving statistics. Keras's own `stateful=True` needs the model's batch
size fixed, which a shorter evaluation batch would break; this reads the first rows instead.
A prediction starts from zeros and writes nothing.
"""

from __future__ import annotations

from typing import Any

import keras
from crosstrain.nn.model import LayerNode
from keras import ops


class CarriedState(keras.layers.Layer):
    """A recurrent layer whose initial state is the final state of the previous batch."""

    predicting = False
    """Set by `predict_step` (read when a step is traced): start from zeros, write nothing."""

    def __init__(self, rnn: Any, rows: int, names: tuple[str, ...], **kwargs: Any):
        super().__init__(name=f"{rnn.name}_carried", **kwargs)
        self.rnn, self.rows, self.names = rnn, rows, names

    def build(self, input_shape: Any) -> None:
        shape = (self.rows, self.rnn.units)
        self.carried = [
            self.add_weight(shape=shape, initializer="zeros", trainable=False, name=name)
            for name in self.names
        ]
        self.rnn.build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> Any:
        if self.rnn.return_sequences:
            return (*input_shape[:2], self.rnn.units)
        return (input_shape[0], self.rnn.units)

    def call(self, x: Any, training: Any = None) -> Any:
        rows = ops.shape(x)[0]
        if CarriedState.predicting:
            return self.rnn(x, training=training)[0]
        initial = [
            ops.copy(ops.cast(ops.slice(v.value, (0, 0), (rows, self.rnn.units)), x.dtype))
            for v in self.carried
        ]
        y, *last = self.rnn(x, initial_state=initial, training=training)
        for variable, value in zip(self.carried, last, strict=True):
            value = ops.cast(ops.stop_gradient(value), variable.dtype)
            variable.assign(ops.slice_update(variable.value, (0, 0), value))
        return y


def recurrent(builder: Any, node: LayerNode, x: Any, options: dict[str, Any]) -> Any:
    layer = node.layer
    cls = keras.layers.LSTM if layer.type == "LSTM" else keras.layers.GRU
    extra = {"reset_after": True} if layer.type == "GRU" else {}
    if layer.state_batch:
        extra["return_state"] = True
    native = cls(layer.units, return_sequences=layer.return_sequences, **extra, **options)
    variables: dict[str, Any] = {}
    if layer.state_batch:
        carried = CarriedState(native, layer.state_batch, layer.state_names)
        y = carried(x)
        variables = dict(zip(layer.state_names, carried.carried, strict=True))
    else:
        y = native(x)
    for pname in layer.params(node.input_shape):
        builder._add(
            node, pname, variables[pname] if pname in variables else getattr(native.cell, pname)
        )
    return y
