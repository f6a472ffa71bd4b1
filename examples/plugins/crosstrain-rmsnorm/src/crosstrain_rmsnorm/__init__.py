"""crosstrain-rmsnorm: the RMSNorm layer for every backend, and a callback that logs its scales.

Registered through the `crosstrain` entry-point group (see pyproject.toml). Importing this
module imports no framework: each backend's implementation is imported when it is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crosstrain import hookimpl

from .callback import ScaleLogger
from .layer import RMSNorm


@hookimpl
def crosstrain_add_layers(registry: Any) -> None:
    registry.layers.add(RMSNorm)


@hookimpl
def crosstrain_make_callbacks(spec: Any, run_dir: Path | None) -> list[Any]:
    if run_dir is None or spec.model is None:
        return []
    from crosstrain.model import plan, walk

    if not any(node.layer.type == "RMSNorm" for node in walk(plan(spec.model))):
        return []
    return [ScaleLogger(run_dir / "rmsnorm_scales.jsonl")]


__all__ = ["RMSNorm", "ScaleLogger", "crosstrain_add_layers", "crosstrain_make_callbacks"]
