"""Built-in data sources: `sklearn:<name>`, `npz:<path>`, `random:classification|regression`,
and the file sources `npy:<path>` and `csv:<path>` (in `file_sources`)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from crosstrain.data.arrays import ArrayData
from crosstrain.errors import DataError
from crosstrain.plugin.hookspecs import hookimpl
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from .file_sources import CsvSource, NpySource


class SklearnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: bool = Field(False, description="digits as (8, 8, 1) images instead of 64 features")
    standardize: bool = Field(False, description="zero mean, unit variance per feature")


class SklearnSource:
    """Small data sets that ship inside scikit-learn (no download)."""

    options = SklearnOptions
    names = ("digits", "iris", "wine", "breast_cancer", "diabetes")

    def check(self, argument: str) -> None:
        if argument not in self.names:
            raise ValueError(
                f"unknown scikit-learn data set {argument!r}; known: {', '.join(self.names)}"
            )

    def load(self, argument: str, options: SklearnOptions, seed: int) -> ArrayData:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{argument}")()
        x = bunch.data.astype(np.float32)
        y = bunch.target.astype(np.float32 if argument == "diabetes" else np.int64)
        if argument == "digits":
            x = x / 16.0
        if options.standardize:
            x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-7)
        if options.images:
            if argument != "digits":
                raise ValueError("data.options.images: only sklearn:digits has images")
            x = x.reshape(-1, 8, 8, 1)
        return ArrayData(x.astype(np.float32), y)


class NpzOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: str = Field("x", description="name of the inputs array in the file")
    y: str = Field("y", description="name of the targets array in the file")


class NpzSource:
    """`npz:path/to/file.npz` with arrays `x` and `y` (names configurable); never unpickles."""

    options = NpzOptions

    def check(self, argument: str) -> None:
        if not argument:
            raise ValueError("npz needs a path: npz:path/to/file.npz")

    def load(self, argument: str, options: NpzOptions, seed: int) -> ArrayData:
        path = Path(argument)
        if path.is_dir():
            raise DataError(f"data.source: {path} is a directory, not an .npz file")
        if not path.is_file():
            raise FileNotFoundError(f"data.source: {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                if not hasattr(arrays, "files"):  # np.load read a .npy (one array)
                    raise DataError(
                        f"data.source: {path} is an .npy file (one array), not an .npz archive; "
                        "use npy:PATH"
                    )
                missing = [k for k in (options.x, options.y) if k not in arrays.files]
                if missing:
                    raise ValueError(
                        f"data.source: {path} has no array {missing[0]!r} (it has {arrays.files})"
                    )
                return ArrayData(arrays[options.x], arrays[options.y])
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
            if isinstance(err, (ValueError, FileNotFoundError)) and str(path) in str(err):
                raise
            raise DataError(
                f"data.source: cannot read {path} as an .npz archive ({type(err).__name__}: {err})"
            ) from None


class RandomOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: PositiveInt = 1024
    features: PositiveInt = 20
    classes: PositiveInt = Field(2, description="classification only")
    outputs: PositiveInt = Field(1, description="regression only")
    noise: float = Field(0.1, ge=0.0)
    shape: tuple[PositiveInt, ...] | None = Field(
        None, description="per-sample input shape (default: (features,))"
    )


class RandomSource:
    """Seeded synthetic data: a learnable linear-ish problem of any size."""

    options = RandomOptions
    kinds: tuple[str, ...] = ("classification", "regression")

    def check(self, argument: str) -> None:
        if argument not in self.kinds:
            raise ValueError(
                f"unknown random data {argument!r}; expected one of {', '.join(self.kinds)}"
            )

    def load(self, argument: str, options: RandomOptions, seed: int) -> ArrayData:
        rng = np.random.default_rng([seed, 11])
        shape = tuple(options.shape or (options.features,))
        x = rng.standard_normal((options.samples, *shape)).astype(np.float32)
        flat = x.reshape(options.samples, -1)
        kind: Literal["classification", "regression"] = argument  # type: ignore[assignment]
        if kind == "classification":
            weights = rng.standard_normal((flat.shape[1], options.classes))
            scores = flat @ weights + options.noise * rng.standard_normal(
                (options.samples, options.classes)
            )
            return ArrayData(x, scores.argmax(axis=1).astype(np.int64))
        weights = rng.standard_normal((flat.shape[1], options.outputs)) / np.sqrt(flat.shape[1])
        y = flat @ weights + options.noise * rng.standard_normal((options.samples, options.outputs))
        return ArrayData(x, y.astype(np.float32))


@hookimpl
def crosstrain_add_data_sources(registry: Any) -> None:
    registry.data_sources.add("sklearn", SklearnSource())
    registry.data_sources.add("npz", NpzSource())
    registry.data_sources.add("random", RandomSource())
    registry.data_sources.add("npy", NpySource())
    registry.data_sources.add("csv", CsvSource())
