"""Data sources that read files named in the spec: `npy:PATH` and `csv:PATH` (registered by
`crosstrain.plugins.sources` next to `npz:`). Plain numpy and the csv module: no pandas."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import numpy as np
from crosstrain.data.arrays import ArrayData
from crosstrain.errors import DataError
from pydantic import BaseModel, ConfigDict, Field, field_validator


def _existing(path: str, what: str) -> Path:
    found = Path(path)
    if not found.is_file():
        raise DataError(f"{what}: {found} does not exist")
    return found


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as err:  # object arrays need pickle: never allowed
        raise DataError(f"data.source: cannot read {path}: {err}") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise DataError(f"data.source: {path} is an .npz archive, not an .npy file; use npz:PATH")
    if array.ndim == 0:
        raise DataError(
            f"data.source: {path} holds a 0-d array (the single value {array.item()!r:.60}), "
            "not rows of samples"
        )
    return array


class NpyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    y: str | None = Field(None, description="path of the targets .npy (same number of rows)")
    target_column: int | None = Field(
        None, description="take the targets from this column of a 2-D array (negative counts back)"
    )
    mmap: bool = Field(False, description="memory-map the files instead of reading them whole")


class NpySource:
    """`npy:inputs.npy` with targets from `data.options.y` (another .npy) or `target_column`."""

    options = NpyOptions

    def check(self, argument: str) -> None:
        if not argument:
            raise ValueError("npy needs a path: npy:path/to/inputs.npy")

    def load(self, argument: str, options: NpyOptions, seed: int) -> ArrayData:
        path = _existing(argument, "data.source")
        x = _load_npy(path, options.mmap)
        if (options.y is None) == (options.target_column is None):
            raise DataError(
                "data.options: npy needs exactly one of y (a targets .npy) or target_column"
            )
        if options.y is not None:
            y = _load_npy(_existing(options.y, "data.options.y"), options.mmap)
            if len(y) != len(x):
                raise DataError(
                    f"data.options.y: {options.y} has {len(y)} rows but {path} has {len(x)}"
                )
            return ArrayData(x, y)
        if x.ndim != 2 or not -x.shape[1] <= options.target_column < x.shape[1]:
            raise DataError(
                f"data.options.target_column: {options.target_column} is not a column of {path} "
                f"(shape {x.shape})"
            )
        column = options.target_column % x.shape[1]
        y = targets_as(np.asarray(x[:, column]), "auto", f"{path}, column {column}")
        return ArrayData(np.delete(np.asarray(x), column, axis=1), y)


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str | None = Field(None, description="name of the target column (default: the last)")
    columns: list[str] | None = Field(
        None, description="input columns in this order (default: every column but the target)"
    )
    delimiter: str = Field(",", min_length=1, max_length=1)
    dtype: Literal["float32", "float64"] = Field("float32", description="dtype of the inputs")
    target_dtype: Literal["auto", "int64", "float32"] = Field(
        "auto", description="auto: int64 when every target is a whole number, else float32"
    )
    classes: list[str] | None = Field(
        None, description="target labels in class order: the target column holds these names"
    )

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[str] | None) -> list[str] | None:
        repeated = sorted({c for c in classes or [] if classes.count(c) > 1})
        if repeated:
            raise ValueError(f"names {repeated[0]!r} more than once (each class once, in order)")
        return classes


class CsvSource:
    """`csv:path/file.csv` with a header row; inputs and target are numeric columns."""

    options = CsvOptions

    def check(self, argument: str) -> None:
        if not argument:
            raise ValueError("csv needs a path: csv:path/to/file.csv")

    def load(self, argument: str, options: CsvOptions, seed: int) -> ArrayData:
        path = _existing(argument, "data.source")
        reader = None
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a BOM is no name
                reader = csv.reader(handle, delimiter=options.delimiter)
                return self._read(reader, path, options)
        except UnicodeDecodeError as err:
            raise DataError(
                f"data.source: {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x}: "
                f"{err.reason}); save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from None
        except csv.Error as err:
            line = reader.line_num if reader is not None else 1
            raise DataError(f"{path}, line {line}: {err}") from None

    def _read(self, reader: Any, path: Path, options: CsvOptions) -> ArrayData:
        header = next(reader, None)
        if not header:
            raise DataError(f"data.source: {path} is empty (a header row is expected)")
        header = [name.strip() for name in header]
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise DataError(
                f"data.source: {path} names column {twice[0]!r} more than once in its "
                f"header {header}; which one to use would be a guess"
            )
        target = options.target or header[-1]
        inputs = options.columns or [name for name in header if name != target]
        for name, field in [(target, "target"), *((n, "columns") for n in inputs)]:
            if name not in header:
                raise DataError(
                    f"data.options.{field}: {path} has no column {name!r} (it has {header})"
                )
        where = [header.index(name) for name in inputs]
        target_at = header.index(target)
        x_rows, y_values = [], []
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}, line {line}: {len(row)} fields, but the header has {len(header)}"
                )
            x_rows.append([_number(row[i], path, line, header[i]) for i in where])
            y_values.append(self._target(row[target_at], options, path, line, target))
        if not x_rows:
            raise DataError(f"data.source: {path} has a header but no data rows")
        x = np.asarray(x_rows, dtype=options.dtype)
        return ArrayData(x, self._target_array(y_values, options, path))

    @staticmethod
    def _target(cell: str, options: CsvOptions, path: Path, line: int, name: str) -> float:
        if options.classes is None:
            return _number(cell, path, line, name)
        label = cell.strip()
        if label not in options.classes:
            raise DataError(
                f"{path}, line {line}, column {name!r}: {label!r} is not one of data.options.classes"
            )
        return float(options.classes.index(label))

    @staticmethod
    def _target_array(values: list[float], options: CsvOptions, path: Path) -> np.ndarray:
        y = np.asarray(values, dtype=np.float64)
        return targets_as(y, options.target_dtype, f"{path}, target column")


_WHOLE = 2.0**53
"""Whole numbers up to this size are exact in float64, and fit int64 class labels."""


def targets_as(y: np.ndarray, kind: str, where: str) -> np.ndarray:
    """Targets read as numbers in dtype `kind` (`auto`: int64 when every value is a whole
    number, else float32). A non-finite or huge value never becomes int64 (inf cast to
    -9223372036854775808): `auto` keeps it float, `int64` is a DataError naming the row."""
    if kind == "float32" or not np.issubdtype(y.dtype, np.floating):
        return y.astype(kind) if kind != "auto" else y
    exact = np.isfinite(y) & (np.abs(y) <= _WHOLE)
    whole = exact & (y == np.round(y))
    if kind == "auto":
        return y.astype(np.int64) if whole.all() else y.astype(np.float32)
    if not whole.all():
        row = int(np.flatnonzero(~whole)[0])
        raise DataError(
            f"{where}: target {float(y[row])!r} in row {row} is not a whole number of at most "
            "2**53, so it cannot be an int64 class label (target_dtype int64)"
        )
    return y.astype(np.int64)


def _number(cell: str, path: Path, line: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise DataError(
            f"{path}, line {line}, column {column!r}: cannot read {cell!r} as a number"
        ) from None
