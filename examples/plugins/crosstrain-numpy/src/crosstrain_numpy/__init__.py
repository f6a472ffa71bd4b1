"""crosstrain-numpy: a third-party crosstrain backend in pure numpy.

Registered through the `crosstrain` entry-point group (see pyproject.toml); importing this
module imports numpy and crosstrain only.
"""

from __future__ import annotations

from typing import Any

from crosstrain import hookimpl

from .backend import NumpyBackend


@hookimpl
def crosstrain_add_backends() -> list[Any]:
    return [NumpyBackend()]


__all__ = ["NumpyBackend", "crosstrain_add_backends"]
