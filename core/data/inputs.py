"""Inputs checked against the model before the first step: the per-sample shape, and the ids a
model whose input is integer ids (`model.input_dtype: int64`, an Embedding first) takes.

An id outside `[0, vocab_size)` fails deep inside torch (`IndexError: index out of range`) and
is clamped silently by XLA on jax and keras, so the check lives in core and every backend refuses
the same data with the same `DataError` naming the array, the value, its row and the layer;
float inputs with a fraction are refused too (each backend would truncate them to ids).

Cost: the shape on every batch; the values as one `min`/`max` pass over an array's inputs when
the data is loaded, and for a stream over every batch on the host as it is drawn (as targets).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from crosstrain.errors import DataError

from .targets import host_array, shown


def _graph(spec: Any) -> bool:
    return spec is not None and spec.model is not None and spec.model.is_graph


def _named_inputs(array: Any, spec: Any) -> list[tuple[str, Any, Any]]:
    """`(name, array, InputSpec)` of each model input of a graph in a batch or data set."""
    from crosstrain.data.arrays import Inputs
    from crosstrain.nn.graph import graph_inputs

    specs = graph_inputs(spec.model)
    arrays = array.arrays if isinstance(array, Inputs) else (array,)
    return list(zip(specs, arrays, specs.values(), strict=False))


def check_input_shape(array: Any, spec: Any, where: str) -> None:
    """DataError unless `array` holds samples of `model.input_shape` (skipped without a model
    spec, as for a native model, or for an array without `shape`); a graph's `Inputs`: each of
    `model.inputs`."""
    if _graph(spec):
        from crosstrain.data.arrays import Inputs
        from crosstrain.nn.graph import graph_inputs

        named = _named_inputs(array, spec)
        count = len(array.arrays) if isinstance(array, Inputs) else 1
        if count != len(graph_inputs(spec.model)):
            names = list(graph_inputs(spec.model))
            raise DataError(f"{where}: the model takes the inputs {names}; got {count} array(s)")
        for name, part, input_spec in named:
            shape = getattr(part, "shape", None)
            if shape is not None and tuple(int(n) for n in shape[1:]) != tuple(input_spec.shape):
                raise DataError(
                    f"{where}: input {name!r} of shape {tuple(int(n) for n in shape)} holds "
                    f"samples of shape {tuple(int(n) for n in shape[1:])}, but model.inputs."
                    f"{name}.shape is {list(input_spec.shape)}"
                )
        return
    expected = spec.model.input_shape if spec is not None and spec.model is not None else None
    shape = getattr(array, "shape", None)
    if expected is None or shape is None:
        return
    per_sample = tuple(int(size) for size in shape[1:])
    if per_sample != tuple(expected):
        raise DataError(
            f"{where}: inputs of shape {tuple(int(size) for size in shape)} hold samples of shape "
            f"{per_sample}, but model.input_shape is {list(expected)}"
        )


def first_layer(spec: Any) -> tuple[Any, str] | None:
    """The layer that first sees the model's input, and its path (into composites)."""
    from crosstrain.nn.model import plan

    nodes = plan(spec.model)
    node = nodes[0] if nodes else None
    while node is not None and node.children:
        node = node.children[0]
    return None if node is None else (node.layer, node.path)


def takes_ids(spec: Any) -> bool:
    """Whether the model's input is integer ids (`check_input_ids` has something to check)."""
    if _graph(spec):
        from crosstrain.nn.graph import graph_inputs

        return any(i.dtype == "int64" for i in graph_inputs(spec.model).values())
    return (
        spec is not None and spec.model is not None and spec.model.resolved_input_dtype == "int64"
    )


def _reader(spec: Any, name: str) -> tuple[Any, str] | None:
    """The layer of a graph that first reads model input `name`, and its path."""
    from crosstrain.nn.model import plan

    node = next((n for n in plan(spec.model) if name in n.inputs), None)
    while node is not None and node.children:
        node = node.children[0]
    return None if node is None else (node.layer, node.path)


def check_input_ids(array: Any, spec: Any, where: str, first: Any = None) -> None:
    """DataError when the model takes integer ids and `array` holds a value that is not one:
    a fraction, or (when an Embedding reads the input) a value outside `[0, vocab_size)`.
    `first`: the model's first layer and path, when the caller has worked it out once."""
    if not takes_ids(spec):
        return
    if _graph(spec):
        for name, part, input_spec in _named_inputs(array, spec):
            if input_spec.dtype == "int64":
                _check_ids(part, f"{where}, input {name!r}", _reader(spec, name))
        return
    _check_ids(array, where, first if first is not None else first_layer(spec))


def _check_ids(array: Any, where: str, found: Any) -> None:
    x = host_array(array)
    if x is None or x.size == 0 or not np.issubdtype(x.dtype, np.number):
        return
    if np.issubdtype(x.dtype, np.floating):
        fraction = x != np.floor(x)
        if fraction.any():
            row = int(np.flatnonzero(fraction.reshape(len(x), -1).any(axis=1))[0])
            value = x[row].reshape(-1)[fraction[row].reshape(-1)][0]
            raise DataError(
                f"{where}: input {shown(value)} in row {row} is not an integer id; the model "
                "takes integer ids (model.input_dtype int64)"
            )
    vocab = getattr(found[0], "vocab_size", None) if found is not None else None
    if vocab is None:
        return
    low, high = x.min(), x.max()
    if low < 0 or high >= vocab:
        bad = (x < 0) | (x >= vocab)
        row = int(np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))[0])
        value = x[row].reshape(-1)[bad[row].reshape(-1)][0]
        raise DataError(
            f"{where}: input id {shown(value)} in row {row} is not in the vocabulary of "
            f"{found[1]} ({found[0].type} with vocab_size {vocab} takes ids in "
            f"[0, {vocab - 1}]; the inputs span [{shown(low)}, {shown(high)}])"
        )
