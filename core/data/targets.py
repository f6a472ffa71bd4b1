"""Targets checked against the loss and the model's output before the first step.

A label the model has no output for (11 with 10 classes, -1, any label ≥ the units of a final
`Dense(5)`) or float labels for `cross_entropy` would train silently wrong on jax and keras
(one-hot of an out-of-range index is all zeros) and fail deep inside torch. The check lives in
core, so every backend refuses the same data with the same `DataError` naming the array, the
offending value, its row and the model's output units.

Cost: one pass of `min`/`max` over an array's targets when the data is loaded (arrays and
`data.source`); for a stream (a DataLoader, tf.data ...), every batch as it is drawn, when it
is on the host (numpy, a CPU tensor: a `min`/`max` over one batch's labels, with the model's
output worked out once per stream by `target_checker`). A batch already on an accelerator is
not copied back to be checked (that would be a host sync per step).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from crosstrain.errors import DataError

CLASS_LOSSES = frozenset({"cross_entropy"})
"""Losses whose integer targets are class indices into the model's last output axis."""
ELEMENTWISE_LOSSES = frozenset({"binary_cross_entropy", "mse", "mae", "huber"})
"""Losses that compare targets with outputs value by value (same number per sample)."""


def host_array(targets: Any) -> np.ndarray | None:
    """An array (targets or inputs) as numpy, or None where that would copy from a device
    (left unchecked)."""
    if isinstance(targets, np.ndarray):
        return targets
    device = getattr(targets, "device", None)
    if getattr(device, "type", "cpu") != "cpu":
        return None  # a torch tensor on cuda/mps/xla
    try:
        return np.asarray(targets)
    except Exception:
        return None


def _model_output(spec: Any) -> tuple[tuple[int, ...], str] | None:
    """The per-sample output shape and the path of the last layer (None: a native model)."""
    if spec is None or spec.model is None:
        return None
    from crosstrain.nn.model import output_node

    last = output_node(spec.model)
    return tuple(int(n) for n in last.output_shape), last.path


def check_targets(targets: Any, spec: Any, where: str) -> None:
    """DataError when `targets` cannot be what `spec.loss` compares with the model's output.

    `cross_entropy`: integer labels must lie in `[0, units)` of the last output axis and have
    the output's shape without that axis; float targets must be probabilities of the output's
    shape. `binary_cross_entropy`, `mse`, `mae`, `huber`: as many values per sample as the
    output (`binary_cross_entropy`: in [0, 1]). Other losses (a `module:function`) are the
    user's: unchecked. `where` names the array (`data`, `val_data`, `data.source '...'`).
    """
    if targets is not None and spec is not None:
        check = target_checker(spec)
        if check is not None:
            check(targets, where)


def target_checker(spec: Any) -> Callable[[Any, str], None] | None:
    """`check_targets` for one spec, with the model's output worked out once: a stream checks
    each batch with it (None: nothing to check, no model spec or a loss of the user's)."""
    if spec is None or (spec.loss.name not in CLASS_LOSSES | ELEMENTWISE_LOSSES):
        return None
    found = _model_output(spec)
    if found is None:
        return None
    return functools.partial(_check_with_output, spec=spec, found=found)


def _check_with_output(
    targets: Any, where: str, spec: Any, found: tuple[tuple[int, ...], str]
) -> None:
    y = host_array(targets)
    if y is None or y.ndim == 0 or y.size == 0:
        return
    output, layer = found
    loss = spec.loss.name
    if loss in CLASS_LOSSES:
        ignore = spec.loss.options.get("ignore_index")
        if ignore is not None and np.issubdtype(y.dtype, np.integer):
            y = np.where(y == int(ignore), 0, y)  # an ignored label is in range by definition
        _check_class_targets(y, output, layer, loss, where)
    elif loss in ELEMENTWISE_LOSSES:
        _check_elementwise(y, output, layer, loss, where)


def _row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))[0])


def _check_class_targets(
    y: np.ndarray, output: tuple[int, ...], layer: str, loss: str, where: str
) -> None:
    units = output[-1]
    per_sample = tuple(y.shape[1:])
    if y.dtype == np.bool_:
        raise DataError(
            f"{where}: {loss} got bool labels of shape {y.shape}; it takes integer class indices "
            f"in [0, {units - 1}] ({layer} has {units} units): convert them with y.astype(int)"
        )
    if np.issubdtype(y.dtype, np.integer):
        if per_sample != output[:-1]:
            raise DataError(
                f"{where}: {loss} labels of shape {y.shape} do not fit the model's output "
                f"{list(output)} ({layer}): expected one class index per sample, shape "
                f"(rows{''.join(f', {n}' for n in output[:-1])})"
            )
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= units:
            bad = (y < 0) | (y >= units)
            row = _row(bad)
            value = int(y[row].reshape(-1)[bad[row].reshape(-1)][0])
            raise DataError(
                f"{where}: label {value} in row {row} is not a class of the model's output: "
                f"{layer} has {units} units, so {loss} labels must be in [0, {units - 1}] "
                f"(the labels span [{low}, {high}])"
            )
        return
    if np.issubdtype(y.dtype, np.floating) and per_sample != output:
        raise DataError(
            f"{where}: {loss} got float labels of shape {y.shape} (row 0: "
            f"{shown(y[0])}); it takes integer class indices, or class probabilities of the "
            f"output's shape (rows, {', '.join(map(str, output))}); {layer} has {units} units"
        )
    if not np.issubdtype(y.dtype, np.number) and not np.issubdtype(y.dtype, np.bool_):
        raise DataError(f"{where}: {loss} labels of dtype {y.dtype} are not numbers")


def _check_elementwise(
    y: np.ndarray, output: tuple[int, ...], layer: str, loss: str, where: str
) -> None:
    values = int(np.prod(y.shape[1:], dtype=np.int64))
    expected = int(np.prod(output, dtype=np.int64))
    if values != expected:
        raise DataError(
            f"{where}: targets of shape {y.shape} hold {values} value(s) per sample, but the "
            f"model outputs {expected} ({list(output)} from {layer}) and {loss} compares them "
            "value by value"
        )
    if loss == "binary_cross_entropy" and np.issubdtype(y.dtype, np.number):
        bad = (y < 0) | (y > 1)
        if bad.any():
            row = _row(bad)
            value = y[row].reshape(-1)[bad[row].reshape(-1)][0]
            raise DataError(
                f"{where}: target {shown(value)} in row {row} is outside [0, 1], which {loss} needs"
            )


def shown(value: Any) -> str:
    array = np.asarray(value)
    if array.ndim == 0:
        return repr(array.item())
    text = np.array2string(array, threshold=6, precision=4)
    return text if len(text) <= 60 else text[:57] + "..."
