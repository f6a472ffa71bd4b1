"""Data generators and the cases the suite runs: seeded inputs, targets, specs, layer cases.

Everything is small so the whole suite runs in minutes on a laptop CPU. Every layer type, built
in or a plugin's, takes part through its class attribute `Layer.conformance_cases`:

    conformance_cases: ClassVar = [{"layer": {"type": "RMSNorm"}, "input_shape": [3, 6]}]

Without it a layer is tried as `{type: <name>}` on inputs of shape `(3, 6)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BATCH = 5


@dataclass(frozen=True)
class LayerCase:
    """One layer configuration checked alone.

    Attributes:
        id: test id (`Conv2D-same-stride2`).
        layer: the layer as spec data.
        input_shape: per-sample input shape.
        int_inputs: inputs are integer ids below this bound (Embedding), else None.
        extended: only in the full run, not with `--quick` (a variant of a checked type).
    """

    id: str
    layer: dict[str, Any]
    input_shape: tuple[int, ...]
    int_inputs: int | None = None
    extended: bool = False

    @property
    def type(self) -> str:
        return self.layer["type"]

    def types(self) -> set[str]:
        """Every layer type the case uses (nested ones included)."""
        found: set[str] = set()

        def visit(layer: dict[str, Any]) -> None:
            found.add(layer["type"])
            for child in layer.get("layers", []):
                visit(child)

        visit(self.layer)
        return found


def case_layers(case: LayerCase) -> list[dict[str, Any]]:
    """The layers a case is checked in: the layer alone, after a Dense when it has no
    parameters of its own (so every model has something to train, and its input gradient
    is exercised)."""
    from crosstrain.nn.model import param_specs
    from crosstrain.spec.schema import load_spec

    alone = load_spec(spec([case.layer], case.input_shape)).model
    if param_specs(alone) or case.int_inputs is not None:
        return [case.layer]
    return [{"type": "Dense", "units": case.input_shape[-1]}, case.layer]


def layer_cases() -> list[LayerCase]:
    """One case per entry of each registered layer type's `conformance_cases` (built-ins and
    plugins' layers alike); a type that declares none is tried alone on inputs of shape (3, 6)."""
    from crosstrain.plugin.registry import get_registry

    layers = get_registry().layers
    cases = []
    for name in layers.names():
        if layers.get(name).merge:
            continue  # several inputs: checked in graphs (tests/test_graph.py), not alone
        entries = layers.get(name).conformance_cases or [
            {"layer": {"type": name}, "input_shape": [3, 6]}
        ]
        for index, entry in enumerate(entries):
            default_id = name if len(entries) == 1 else f"{name}-{index}"
            cases.append(
                LayerCase(
                    entry.get("id", default_id),
                    dict(entry["layer"]),
                    tuple(entry["input_shape"]),
                    entry.get("int_inputs"),
                    bool(entry.get("extended", False)),
                )
            )
    return cases


def as_params(cases: list[LayerCase]) -> list[Any]:
    """Cases as pytest parameters, the `extended` ones marked so `--quick` leaves them out."""
    import pytest

    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.extended] if c.extended else []) for c in cases
    ]


def extended(*values: Any) -> Any:
    """A parameter that only the full run checks (`--quick` leaves it out)."""
    import pytest

    return pytest.param(*values, marks=pytest.mark.extended)


def inputs(case: LayerCase, batch: int = BATCH, seed: int = 0) -> np.ndarray:
    """A seeded batch of inputs for a case (float32 normal, or int64 ids)."""
    rng = np.random.default_rng([seed, 17])
    if case.int_inputs is not None:
        return rng.integers(0, case.int_inputs, (batch, *case.input_shape)).astype(np.int64)
    return rng.standard_normal((batch, *case.input_shape)).astype(np.float32)


def normal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Seeded float32 standard normal values."""
    return np.random.default_rng([seed, 29]).standard_normal(shape).astype(np.float32)


def labels(batch: int, classes: int, seed: int = 0) -> np.ndarray:
    """Seeded int64 class labels."""
    return np.random.default_rng([seed, 31]).integers(0, classes, batch).astype(np.int64)


def classification(samples: int = 96, features: int = 6, classes: int = 3, seed: int = 0):
    """A learnable seeded classification set `(x float32, y int64)`."""
    rng = np.random.default_rng([seed, 37])
    centers = rng.standard_normal((classes, features)) * 2.0
    y = rng.integers(0, classes, samples)
    x = centers[y] + rng.standard_normal((samples, features))
    return x.astype(np.float32), y.astype(np.int64)


def spec(
    layers: list[dict[str, Any]],
    input_shape: tuple[int, ...] | list[int],
    *,
    loss: Any = "mse",
    metrics: list[Any] | None = None,
    optimizer: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
    seed: int = 0,
    **trainer: Any,
) -> dict[str, Any]:
    """A spec as data, quiet and writing no files, for the suite's programs and fits."""
    data: dict[str, Any] = {
        "name": "conformance",
        "seed": seed,
        "model": {"input_shape": list(input_shape), "layers": layers},
        "loss": loss,
        "metrics": metrics or [],
        "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
        "trainer": {
            "max_epochs": 1,
            "progress": False,
            "loggers": [],
            "checkpoint": None,
            **trainer,
        },
    }
    if schedule is not None:
        data["schedule"] = schedule
    return data
