"""pytest plugin of the conformance suite (entry point `pytest11`).

Loaded by pytest in every environment where crosstrain is installed, so it is inert unless
`--crosstrain-backend` is given, and it imports no framework.
"""

from __future__ import annotations

from typing import Any


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("crosstrain", "crosstrain conformance suite")
    group.addoption("--crosstrain-backend", default=None, help="backend under test (e.g. torch, jax, keras:jax)")
    group.addoption("--crosstrain-reference", default="torch", help="reference backend (default: torch)")
