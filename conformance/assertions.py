"""Assertion helpers: compare arrays within a tolerance and record the worst difference.

Every comparison records `max |a - b|` for the running test; the pytest plugin reads it
(`take_worst`) and reports the worst difference per section of the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .tolerances import Tolerance, tolerance

_worst: list[float] = []


def take_worst() -> float | None:
    """The largest difference recorded since the last call (None if nothing was compared)."""
    value = max(_worst) if _worst else None
    _worst.clear()
    return value


def _record(diff: float) -> None:
    _worst.append(diff)


def assert_close(actual: Any, expected: Any, kind: str | Tolerance = "32", what: str = "") -> None:
    """Fails unless `actual` matches `expected` within the tolerance `kind`.

    Args:
        actual: value from the backend under test.
        expected: the reference value (numpy reference or reference backend).
        kind: a key of `TOLERANCES` or a Tolerance.
        what: names the compared quantity in the failure message.
    """
    tol = tolerance(kind) if isinstance(kind, str) else kind
    a = np.atleast_1d(np.asarray(actual, dtype=np.float64))
    b = np.atleast_1d(np.asarray(expected, dtype=np.float64))
    label = f"{what}: " if what else ""
    if a.shape != b.shape:
        raise AssertionError(f"{label}shape {a.shape} != expected {b.shape}")
    if a.size == 0:
        return
    if not np.all(np.isfinite(a) == np.isfinite(b)):
        raise AssertionError(f"{label}non-finite values where the reference has finite ones")
    finite = np.isfinite(b)
    diff = np.where(finite, np.abs(a - b), 0.0)
    worst = float(diff.max())
    _record(worst)
    bad = diff > tol.atol + tol.rtol * np.abs(np.where(finite, b, 0.0))
    if bad.any():
        index = np.unravel_index(int(np.argmax(np.where(bad, diff, -1.0))), diff.shape)
        raise AssertionError(
            f"{label}{int(bad.sum())} of {a.size} values differ beyond {tol} "
            f"(max |diff| {worst:.3g}; at {tuple(int(i) for i in index)}: "
            f"got {a[index]:.8g}, expected {b[index]:.8g})"
        )


def assert_all_close(
    actual: Mapping[str, Any],
    expected: Mapping[str, Any],
    kind: str | Tolerance = "32",
    what: str = "",
) -> None:
    """`assert_close` for every name of two mappings, which must have the same names."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        raise AssertionError(f"{what}: names differ; missing {missing}, unexpected {extra}")
    for name in expected:
        assert_close(actual[name], expected[name], kind, f"{what} {name}".strip())


def assert_finite(value: Any, what: str = "") -> None:
    """Fails when any value is NaN or infinite."""
    if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
        raise AssertionError(f"{what}: non-finite value {value!r}")
