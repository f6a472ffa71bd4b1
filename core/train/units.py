"""The units a pass of the loop steps through: `(group, rows, batch)` per step, from arrays (by
the epoch's order, on the device when the program caches the data) or from a stream, cut by
`limit_*_batches`; `group > 1` stacks `steps_per_execution` batches for one `train_steps` call."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

import numpy as np
from crosstrain.data.arrays import (
    ArrayData,
    Inputs,
    batch_slices,
    check_drawn,
    check_finite_rows,
)
from crosstrain.data.batches import Batches, array_kind, array_units, rows
from crosstrain.train.run_length import limited


def pass_units(
    trainer: Any,
    data: ArrayData | Batches,
    stage: str,
    order: np.ndarray | None,
    batch_size: int,
    drop_last: bool,
    first: int,
    limit: int | float | None,
) -> tuple[Iterator[tuple[int, int, Any]], int | None]:
    """The pass's units from batch `first` on and its length in batches (None: unknown)."""
    if isinstance(data, Batches):  # a loader or iterable: read once per epoch, as it comes
        stream = data.epoch(trainer.epoch, first, array_kind(trainer.program))
        units, total = ((1, rows(b[0]), b) for b in stream), limited(limit, data.length)
        if total is not None and total != data.length:
            units = islice(units, max(0, total - first))
    else:
        slices = batch_slices(len(order), batch_size, drop_last)
        slices = slices[: limited(limit, len(slices))]
        train = stage == "train"
        units = array_units(
            order,
            slices,
            first,
            lambda i: group_size(trainer, slices, i, batch_size) if train else 1,
            lambda cut, group: device_batch(trainer, data, cut, group),
        )
        total = len(slices)
    if trainer.phase_timer is not None:
        units = trainer.phase_timer.iterate(units, "data")
    return units, total


def device_batch(
    trainer: Any, data: ArrayData, indices: np.ndarray, group: int = 1
) -> tuple[Any, Any]:
    """The rows `indices` as a step's input: `(handle, rows)` when the program caches the data set on
    its device (`cache_data`), else numpy `(x, y)`; `group > 1` stacks K batches.

    An index view (a split of memory-mapped arrays) caches its whole source arrays once and
    draws its rows from them. Data not scanned for NaN up front (`ArrayData.unchecked`) is
    checked batch by batch as drawn, or whole when it goes to the device whole.
    """
    key = id(data) if data.index is None else (id(data.x), id(data.y))
    if key not in trainer._device_data:
        cacheable = data.cacheable and not isinstance(data.x, Inputs)  # several inputs: host
        handle = trainer.program.cache_data(data.x, data.y) if cacheable else None
        if handle is not None and data.unchecked is not None:
            check_finite_rows(data.x, "x", data.unchecked)
            check_finite_rows(data.y, "y", data.unchecked)
        trainer._device_data[key] = handle
    handle = trainer._device_data[key]
    source = data.source_rows(indices)
    if handle is not None:
        return handle, source if group == 1 else source.reshape(group, -1)
    x, y = data.draw(source)
    check_drawn(data, x, y, source)
    if group == 1:
        return x, y
    return x.reshape(group, -1, *x.shape[1:]), y.reshape(group, -1, *y.shape[1:])


def group_size(trainer: Any, slices: list[slice], index: int, batch_size: int) -> int:
    """How many full batches from `index` on go into one `train_steps` call (1: a plain step)."""
    k = trainer.spec.trainer.steps_per_execution
    if (
        k == 1
        or trainer.spec.trainer.on_nan == "skip"
        or index + k > len(slices)
        or trainer.global_step + k > trainer.total_steps
    ):
        return 1
    full = all(slices[i].stop - slices[i].start == batch_size for i in range(index, index + k))
    return k if full else 1


class RunningMean:
    """Weighted means of host metrics over several pulls."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: dict[str, float], count: int) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value * count
        self.count += count

    def means(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{k}": v / self.count for k, v in self.sums.items()} if self.count else {}
