"""Every numeric tolerance of the conformance suite, in one place (printed in the report).

A value `a` from the backend under test matches an expected `b` when
`|a - b| <= atol + rtol * |b|` elementwise. Keys are the precision a comparison runs in;
`grad` is for gradients recovered from one SGD step, `exact` for what must be bit-identical
(state round trips, determinism on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance of one comparison kind."""

    atol: float
    rtol: float

    def __str__(self) -> str:
        return f"atol={self.atol:g} rtol={self.rtol:g}"


TOLERANCES: dict[str, Tolerance] = {
    "exact": Tolerance(0.0, 0.0),
    "64": Tolerance(1e-10, 1e-9),
    "32": Tolerance(2e-5, 2e-4),
    "grad": Tolerance(2e-4, 2e-3),
    "optimizer": Tolerance(2e-5, 2e-4),
    "training": Tolerance(1e-4, 1e-3),
    "16-mixed": Tolerance(2e-2, 2e-2),
    "bf16-mixed": Tolerance(6e-2, 6e-2),
    "bf16-true": Tolerance(1.5e-1, 1e-1),
}
"""Tolerance by comparison kind; `training` covers a few float32 steps compared across backends."""

TARGET_ACCURACY = 0.9
"""Validation accuracy the training run (digits MLP, 5 epochs) must reach."""


def tolerance(kind: str) -> Tolerance:
    """The tolerance of `kind` (a precision such as `32`, or `grad`, `exact` ...)."""
    return TOLERANCES[kind]


def describe() -> list[str]:
    """One line per tolerance, for the report header."""
    return [f"{kind:<10} {tol}" for kind, tol in TOLERANCES.items()]
