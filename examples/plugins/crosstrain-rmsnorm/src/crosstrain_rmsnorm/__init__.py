"""crosstrain-rmsnorm: an RMSNorm layer (`ExampleRMSNorm`), written once for every backend, a
callback that logs its scales, and an optimizer in one file (`optimizer.py`, `ExampleSignum`). (crosstrain has a built-in `RMSNorm` on fused kernels; this one
shows how a third party writes a layer.)

The layer has no torch, flax or Keras class: its `forward` is written against the array API
(`xp` is numpy for the reference, torch, jax.numpy or Keras ops inside each backend's compiled
step), and each backend wraps it in a module of its own. Registered through the `crosstrain`
entry-point group (see pyproject.toml); importing this module imports no framework.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from crosstrain import Callback, hookimpl
from crosstrain.nn.layers import Layer, ParamSpec, Shape
from pydantic import Field

from .optimizer import ExampleSignum, crosstrain_add_optimizers


class ExampleRMSNorm(Layer):
    """`x / sqrt(mean(x**2, last axis) + epsilon) * scale`; parameter `scale` (ones)."""

    type: Literal["ExampleRMSNorm"] = "ExampleRMSNorm"
    epsilon: float = Field(1e-6, gt=0.0)

    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {"layer": {"type": "ExampleRMSNorm"}, "input_shape": [3, 6]},
        {"layer": {"type": "ExampleRMSNorm", "epsilon": 0.1}, "input_shape": [6]},
    ]
    """What the conformance suite checks on every backend."""

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        return {"scale": ParamSpec((input_shape[-1],), "ones")}

    def forward(self, xp, params, x, training=False, rng=None):
        ms = xp.mean(x * x, axis=-1, keepdims=True)
        return x / xp.sqrt(ms + self.epsilon) * params["scale"]


class ScaleLogger(Callback):
    """Appends `{"epoch": e, "<layer>/scale": mean, ...}` to a file after each training epoch.

    Args:
        path: the JSON-lines file (its directory must exist).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int) -> None:
        if stage != "train":
            return
        params = trainer.program.get_state().params
        row: dict[str, Any] = {"epoch": epoch}
        row.update({name: float(value.mean()) for name, value in params.items() if _is_scale(name)})
        self.rows.append(row)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def _is_scale(name: str) -> bool:
    *layer, param = name.split("/")
    return param == "scale" and bool(layer) and layer[-1].startswith("examplermsnorm")


@hookimpl
def crosstrain_add_layers(registry: Any) -> None:
    registry.layers.add(ExampleRMSNorm)


@hookimpl
def crosstrain_make_callbacks(spec: Any, run_dir: Path | None) -> list[Any]:
    if run_dir is None or spec.model is None:
        return []
    from crosstrain.nn.model import plan, walk

    if not any(node.layer.type == "ExampleRMSNorm" for node in walk(plan(spec.model))):
        return []
    return [ScaleLogger(run_dir / "rmsnorm_scales.jsonl")]


__all__ = [
    "ExampleRMSNorm",
    "ExampleSignum",
    "ScaleLogger",
    "crosstrain_add_layers",
    "crosstrain_add_optimizers",
    "crosstrain_make_callbacks",
]
