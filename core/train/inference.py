"""Scoring and predicting with a built program, in memory (`FitResult.evaluate`/`predict`) or
from a checkpoint (`crosstrain.evaluate`, `crosstrain evaluate`): which data is scored and what
its split is called."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.data.batches import as_data, as_inputs
from crosstrain.plugin.protocol import Program
from crosstrain.plugin.registry import get_registry
from crosstrain.spec.resolve import check_finite, load_data
from crosstrain.spec.schema import Spec
from crosstrain.train.callbacks import FitCallbacks
from crosstrain.train.trainer import Trainer


@dataclass
class Evaluation:
    """What `evaluate_checkpoint` scored: the metrics, keyed `<split>_<name>`, the checkpoint
    (None for an in-memory program), its step, and which data (`split`, `described`)."""

    metrics: dict[str, float]
    split: str
    described: str
    checkpoint: Path | None = None
    step: int | None = None


def evaluation_data(spec: Spec, data: Any = None) -> tuple[Any, str, str]:
    """The data `evaluate` scores, its split name and a description for people.

    `data` given: all of it, split `test`. Else the spec's data: its validation split (`val`)
    when `data.validation_split` holds one out, else all of it — the data trained on (`train`).
    """
    if data is not None:
        given = check_finite(as_data(data, "data", spec), "data")
        return given, "test", f"the data given ({_rows(given)})"
    train, val = load_data(spec)
    source = spec.data.source
    if val is not None and len(val):
        part = f"{spec.data.validation_split:g} of {source}"
        return val, "val", f"the validation split ({part}, {_rows(val)})"
    return (
        train,
        "train",
        f"all of {source}, the training data: no validation split ({_rows(train)})",
    )


def _rows(data: Any) -> str:
    try:
        return f"{len(data):,} samples"
    except TypeError:
        return "a stream"


def evaluate_program(
    spec: Spec, program: Program, backend: str, data: Any = None
) -> tuple[dict[str, float], str, str]:
    """Scores a built program (`evaluation_data` picks the data); returns the metrics keyed
    `<split>_<name>`, the split and its description. `FitResult.evaluate` calls this."""
    trainer = Trainer(spec, program, get_registry(), backend, None)
    target_data, split, described = evaluation_data(spec, data)
    with FitCallbacks(get_registry(), spec, None, []):
        return trainer.evaluate(target_data, stage=split), split, described


def predict_program(spec: Spec, program: Program, backend: str, x: Any = None) -> np.ndarray:
    """Outputs of a built program for inputs `x` (default every input of `spec.data`)."""
    trainer = Trainer(spec, program, get_registry(), backend, None)
    if x is None:
        train, val = load_data(spec)
        x = (
            train.arrays()[0]
            if val is None
            else np.concatenate([train.arrays()[0], val.arrays()[0]])
        )
    return trainer.predict(as_inputs(x, "predict data", spec))
