"""crosstrain-spirals: a generated data source, `spirals:<arms>`, and a loss and a metric for
it (`focal_loss`, `brier_score`), registered as a plugin.

Registered through the `crosstrain` entry-point group (see pyproject.toml); the source follows
`crosstrain.data.arrays.DataSource`: an `options` model, a cheap `check` of the argument and `load`.
The loss and metric are array-API functions (`losses.py`), checked on every backend by
`crosstrain conformance` through their `conformance_cases`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from crosstrain import hookimpl
from crosstrain.data.arrays import ArrayData
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from .losses import brier_score, focal_loss


class SpiralsOptions(BaseModel):
    """`data.options` of `spirals:`; unknown keys are refused with their path."""

    model_config = ConfigDict(extra="forbid")
    samples_per_arm: PositiveInt = Field(200, description="points on each arm")
    turns: float = Field(1.5, gt=0, description="windings of each arm")
    noise: float = Field(0.05, ge=0, description="standard deviation of the jitter")


class SpiralsSource:
    """Interleaved spiral arms; class `k` is arm `k`, rotated by `2πk / arms`."""

    options = SpiralsOptions

    def check(self, argument: str) -> None:
        if not argument.isdigit() or int(argument) < 2:
            raise ValueError(f"spirals needs a number of arms >= 2 (spirals:2), got {argument!r}")

    def load(self, argument: str, options: SpiralsOptions, seed: int) -> ArrayData:
        arms, n = int(argument), options.samples_per_arm
        rng = np.random.default_rng([seed, 2024])
        radius = np.sqrt(rng.uniform(0.0, 1.0, (arms, n)))  # even density along the arm
        angle = radius * options.turns * 2 * np.pi + (2 * np.pi / arms) * np.arange(arms)[:, None]
        points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
        points += options.noise * rng.standard_normal(points.shape)
        labels = np.repeat(np.arange(arms), n)
        order = rng.permutation(arms * n)
        return ArrayData(points.reshape(-1, 2)[order].astype(np.float32), labels[order])


@hookimpl
def crosstrain_add_data_sources(registry: Any) -> None:
    registry.data_sources.add("spirals", SpiralsSource())


@hookimpl
def crosstrain_add_losses(registry: Any) -> None:
    registry.losses.add("focal_loss", focal_loss)


@hookimpl
def crosstrain_add_metrics(registry: Any) -> None:
    registry.metrics.add("brier_score", brier_score)


__all__ = [
    "SpiralsOptions",
    "SpiralsSource",
    "brier_score",
    "crosstrain_add_data_sources",
    "crosstrain_add_losses",
    "crosstrain_add_metrics",
    "focal_loss",
]
