"""Data: the `data:` section of a spec, in-memory arrays, the seeded split and batch order.

Batch order comes from core, not from a framework's loader: epoch `e` visits the samples in
`permutation(seed, e)`, so every backend sees the same batches and a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt


def _switch(value: Any) -> Any:
    """YAML reads `on`/`off` as booleans; `device_cache: off` means the string "off"."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class DataSpec(BaseModel):
    """`data:` in a spec. `source` is `<kind>:<argument>`, e.g. `sklearn:digits`, `npz:train.npz`."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(
        None, description="e.g. sklearn:digits, npz:PATH, random:classification"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="options of the source")
    validation_split: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt | None = None
    shuffle: bool = True
    drop_last: bool = False
    device_cache: Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch)] = "auto"


@dataclass
class ArrayData:
    """Inputs and targets as numpy arrays with the sample axis first."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        self.x, self.y = np.asarray(self.x), np.asarray(self.y)
        if len(self.x) != len(self.y):
            raise ValueError(f"inputs have {len(self.x)} samples but targets have {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> ArrayData:
        return ArrayData(self.x[index], self.y[index])


class DataSource(Protocol):
    """What a data-source plugin registers under its kind (the part before `:`)."""

    options: type[BaseModel]
    """Pydantic model of the source's options (`data.options`); `extra="forbid"` recommended."""

    def check(self, argument: str) -> None:
        """Raise ValueError if `argument` (after the colon) is not valid. Must be cheap."""

    def load(self, argument: str, options: BaseModel, seed: int) -> ArrayData:
        """Load or generate the data set."""


def split(data: ArrayData, fraction: float, seed: int) -> tuple[ArrayData, ArrayData | None]:
    """Seeded train/validation split; the validation part is `fraction` of the samples."""
    if not fraction:
        return data, None
    order = np.random.default_rng([seed, 7]).permutation(len(data))
    n_val = max(1, round(len(data) * fraction))
    return data.take(np.sort(order[n_val:])), data.take(np.sort(order[:n_val]))


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Sample indices in the order epoch `epoch` visits them."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, 1, epoch]).permutation(n)


def batch_slices(n: int, batch_size: int, drop_last: bool) -> list[slice]:
    """Slices of an epoch's order, one per batch."""
    stop = n - n % batch_size if drop_last else n
    return [slice(i, min(i + batch_size, stop)) for i in range(0, stop, batch_size)]


def as_array_data(data: Any, where: str) -> ArrayData:
    """`(x, y)` tuples, dicts with `x`/`y`, or ArrayData to ArrayData; errors name `where`."""
    if isinstance(data, ArrayData):
        return data
    if isinstance(data, dict) and {"x", "y"} <= set(data):
        return ArrayData(data["x"], data["y"])
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return ArrayData(np.asarray(data[0]), np.asarray(data[1]))
    raise TypeError(
        f"{where}: expected (x, y) numpy arrays or a dict with 'x' and 'y', got {type(data).__name__}"
    )
