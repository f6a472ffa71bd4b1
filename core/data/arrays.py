"""Data: the `data:` section of a spec, in-memory arrays, the seeded split and batch order.

Batch order comes from core, not from a framework's loader: epoch `e` visits the samples in
`permutation(seed, e)`, so every backend sees the same batches and a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar, Literal, Protocol

import numpy as np
from crosstrain.errors import DataError
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


def memory_mapped(array: Any) -> bool:
    """Whether a numpy array's memory is a memory-mapped file (`np.load(mmap_mode=...)`, a view
    of one): such data is never copied whole or read whole before training."""
    while array is not None:
        if isinstance(array, mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def host_numpy(array: Any) -> np.ndarray:
    """`np.asarray(array)`; a torch tensor that requires grad is detached first (numpy()
    refuses it)."""
    if getattr(array, "requires_grad", False) and callable(getattr(array, "detach", None)):
        array = array.detach()
    return np.asarray(array)


_DTYPE_KINDS = {
    "U": "strings",
    "S": "bytes",
    "O": "Python objects",
    "V": "records",
    "M": "dates",
    "m": "time spans",
}


def check_array_kinds(data: Any, where: str) -> None:
    """DataError naming `where` and the array when `x` or `y` of `data` (ArrayData) does not
    hold real numbers: strings, objects, dates, or complex numbers (each backend would drop the
    imaginary part, with at most a warning). Reads dtypes only."""
    for name in ("x", "y"):
        array = getattr(data, name, None)
        dtype = getattr(array, "dtype", None)
        if dtype is None or dtype.kind in "biuf":
            continue
        if dtype.kind == "c":
            raise DataError(
                f"{where}: {name} holds complex numbers ({dtype}); training takes real numbers "
                "(the imaginary part would be dropped): give the real and imaginary parts as "
                "separate features"
            )
        raise DataError(
            f"{where}: {name} holds {_DTYPE_KINDS.get(dtype.kind, 'non-numbers')} (dtype "
            f"{dtype}); expected numbers"
        )


class Inputs:
    """The inputs of a model with several (`model.inputs`): one array per input, sample axis
    first, in the model's input order. Rows are taken from every array at once (`x[rows]`,
    `len(x)`), so data sets, splits and batches of several inputs work as those of one array;
    a Program receives `Inputs` as a batch's `x` and reads `.arrays`.
    """

    def __init__(self, arrays: Any):
        self.arrays = tuple(a if hasattr(a, "shape") else np.asarray(a) for a in arrays)
        sizes = {len(a) for a in self.arrays}
        if len(sizes) > 1:
            raise ValueError(f"the input arrays have different numbers of samples: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, rows: Any) -> Inputs:
        return Inputs(tuple(a[rows] for a in self.arrays))

    def reshape(self, group: int, *_: Any) -> Inputs:
        """K batches stacked on a leading axis (`steps_per_execution`), each array alike."""
        return Inputs(tuple(a.reshape(group, -1, *a.shape[1:]) for a in self.arrays))

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self),)

    def __repr__(self) -> str:
        return f"Inputs({', '.join(str(tuple(a.shape)) for a in self.arrays)})"


def as_inputs_of(model: Any, x: Any, where: str) -> Any:
    """`x` given for a graph model with several inputs (a dict by input name, a tuple or list
    in input order) as `Inputs`; anything else as is."""
    if model is None or not model.is_graph or not isinstance(x, (dict, tuple, list, Inputs)):
        return x
    if isinstance(x, Inputs):
        return x
    from crosstrain.nn.graph import as_input_tuple

    return Inputs(as_input_tuple(model, x, where))


@dataclass
class ArrayData:
    """Inputs and targets as numpy arrays with the sample axis first.

    Attributes:
        x, y: the arrays.
        index: the rows of `x`/`y` this data set holds (an index view: a split of
            memory-mapped arrays is never a copy), or None for all of them. Read rows with
            `rows`, whole arrays with `arrays`.
        unchecked: set (to the name of the data, for errors) when the finite values of `x` and
            `y` were not scanned up front (memory-mapped data): each batch is checked as drawn.
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray | None = None
    unchecked: str | None = None

    cacheable: ClassVar[bool] = True
    """Whether a program may put `x` and `y` on its device whole (`Program.cache_data`); False
    for views that would grow when copied (token windows over one token file)."""

    def __post_init__(self) -> None:
        several = isinstance(self.x, Inputs)  # a graph's several inputs
        if several:
            self.x = Inputs(tuple(host_numpy(a) for a in self.x.arrays))
        else:
            self.x = host_numpy(self.x)
        self.y = host_numpy(self.y)
        for name in ("y",) if several else ("x", "y"):
            array = getattr(self, name)
            if array.ndim == 0:
                raise DataError(
                    f"{name} is a 0-d array (the single value {array.item()!r:.60}), not rows "
                    "of samples along a first axis"
                )
            if not array.dtype.isnative:  # big-endian on a little-endian machine: jax refuses it
                setattr(self, name, array.astype(array.dtype.newbyteorder("=")))
        if len(self.x) != len(self.y):
            raise ValueError(f"inputs have {len(self.x)} samples but targets have {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x) if self.index is None else len(self.index)

    def source_rows(self, indices: np.ndarray) -> np.ndarray:
        """Positions `indices` of this data set as rows of `x` and `y`."""
        return np.asarray(indices) if self.index is None else self.index[indices]

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(x, y)` of the samples at positions `indices` (a copy of those rows only)."""
        return self.draw(self.source_rows(indices))

    def draw(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(x, y)` of source rows `rows` (see `source_rows`), as a batch goes to a step."""
        return self.x[rows], self.y[rows]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole `(x, y)` (a copy for an index view)."""
        return (self.x, self.y) if self.index is None else self.rows(np.arange(len(self)))

    def take(self, index: np.ndarray) -> ArrayData:
        """The samples at positions `index`: copied rows, or an index view of memory-mapped
        arrays."""
        if self.index is not None or memory_mapped(self.x):
            return replace(self, index=self.source_rows(index))
        return ArrayData(self.x[index], self.y[index], unchecked=self.unchecked)

    def holdout(self, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the training and validation samples of a split holding out `fraction`
        (seeded, sorted): a random `fraction` of the samples. A source whose samples overlap
        (token windows) holds out whole stretches instead."""
        order = np.random.default_rng([seed, 7]).permutation(len(self))
        n_val = max(1, round(len(self) * fraction))
        return np.sort(order[n_val:]), np.sort(order[:n_val])


FINITE_CHECK_ROWS = 65536
"""Rows per chunk of the non-finite scan (bounds its temporary memory on memory-mapped data)."""


def check_finite_rows(
    array: np.ndarray, name: str, where: str, rows: np.ndarray | None = None
) -> None:
    """DataError naming `where`, the array `name` and the first row with NaN or infinity of a
    floating `array` (scanned in chunks); `rows`, when given, are the source rows of `array`'s
    rows (a drawn batch), so the error names the row of the data set."""
    from crosstrain.errors import DataError

    if isinstance(array, Inputs):
        for part in array.arrays:
            check_finite_rows(part, name, where, rows)
        return
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.inexact):
        return
    for start in range(0, len(array), FINITE_CHECK_ROWS):
        chunk = array[start : start + FINITE_CHECK_ROWS]
        bad = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if bad.any():
            at = start + int(np.flatnonzero(bad)[0])
            values = np.asarray(array[at]).ravel()
            row = at if rows is None else int(rows[at])
            raise DataError(
                f"{where}: {name} has a non-finite value ({values[~np.isfinite(values)][0]}) in "
                f"row {row}; remove or impute it before training"
            )


def check_drawn(data: ArrayData, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> None:
    """The finiteness check of a batch drawn from data whose arrays were not scanned up front
    (`ArrayData.unchecked`); `rows` are the batch's source rows."""
    if data.unchecked is not None:
        check_finite_rows(x, "x", data.unchecked, rows)
        check_finite_rows(y, "y", data.unchecked, rows)


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
    train, val = data.holdout(fraction, seed)
    return data.take(train), data.take(val)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Sample indices in the order epoch `epoch` visits them."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, 1, epoch]).permutation(n)


def batch_slices(n: int, batch_size: int, drop_last: bool) -> list[slice]:
    """Slices of an epoch's order, one per batch."""
    stop = n - n % batch_size if drop_last else n
    return [slice(i, min(i + batch_size, stop)) for i in range(0, stop, batch_size)]


def as_array_data(data: Any, where: str, model: Any = None) -> ArrayData:
    """`(x, y)` tuples, dicts with `x`/`y`, or ArrayData to ArrayData; errors name `where`.
    For a graph `model`, `x` may be a dict of arrays by input name or a tuple in input order."""
    if isinstance(data, ArrayData):
        return data
    pair = None
    if isinstance(data, dict) and {"x", "y"} <= set(data):
        pair = as_inputs_of(model, data["x"], where), data["y"]
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        pair = as_inputs_of(model, data[0], where), data[1]
    if pair is not None:
        try:
            return ArrayData(*pair)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
    raise TypeError(
        f"{where}: expected (x, y) numpy arrays or a dict with 'x' and 'y', got {type(data).__name__}"
    )
