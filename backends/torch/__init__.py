"""The PyTorch reference backend, registered as a crosstrain plugin.

Importing this package does not import torch; `TorchBackend.build` does.
"""

from __future__ import annotations

from typing import Any

from crosstrain.plugin.hookspecs import hookimpl

from .plugin import TorchBackend


@hookimpl
def crosstrain_add_backends() -> list[Any]:
    return [TorchBackend()]


__all__ = ["TorchBackend", "crosstrain_add_backends"]
