"""The backend under test (and the reference) as the tests see them: declared capabilities,
skips for what is not declared, and programs built from spec data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
from crosstrain.plugin.protocol import Capabilities, Program

BACKEND_ENV = "CROSSTRAIN_CONFORMANCE_BACKEND"
REFERENCE_ENV = "CROSSTRAIN_CONFORMANCE_REFERENCE"


@dataclass
class Target:
    """A registered backend as the suite drives it.

    Attributes:
        name: the name given to `build` (`keras:jax` keeps its engine).
        backend: the registered Backend object.
        caps: its declared Capabilities.
    """

    name: str
    backend: Any
    caps: Capabilities

    @classmethod
    def load(cls, name: str) -> Target:
        """The registered backend `name`; fails with the registry's message when unknown."""
        from crosstrain.plugin.registry import get_registry

        backend = get_registry().backend(name)
        return cls(name, backend, backend.capabilities())

    # -- skips for what is not declared ---------------------------------------------------------

    def _skip(self, feature: str) -> None:
        pytest.skip(f"not declared by {self.name}: {feature}")

    def require_layers(self, types: set[str] | list[str]) -> None:
        missing = sorted(set(types) - set(self.caps.layers))
        if missing:
            self._skip(f"layer {', '.join(missing)}")

    def require_optimizer(self, name: str) -> None:
        if self.caps.optimizers is not None and name not in self.caps.optimizers:
            self._skip(f"optimizer {name}")

    def require_loss(self, name: str) -> None:
        if self.caps.losses is not None and name not in self.caps.losses:
            self._skip(f"loss {name}")

    def require_precision(self, precision: str) -> None:
        if precision not in self.caps.precisions:
            self._skip(f"precision {precision}")

    def require_spec(self, spec: dict[str, Any]) -> None:
        """Skips unless every layer, the loss, optimizer, precision and dropout-mask mode of
        `spec` are declared."""
        from crosstrain.nn.model import plan, walk
        from crosstrain.spec.schema import load_spec

        loaded = load_spec(spec)
        self.require_layers({node.layer.type for node in walk(plan(loaded.model))})
        self.require_loss(loaded.loss.name)
        self.require_optimizer(loaded.optimizer.name)
        self.require_precision(loaded.trainer.precision)
        if loaded.model.dropout_masks == "shared" and not self.caps.shared_dropout_masks:
            self._skip("model.dropout_masks: shared")

    def any_optimizer(self, *preferred: str) -> str:
        """The first of `preferred` that is declared (skips when none is)."""
        for name in preferred:
            if self.caps.optimizers is None or name in self.caps.optimizers:
                return name
        self._skip(f"any of the optimizers {', '.join(preferred)}")
        raise AssertionError  # unreachable

    # -- programs -------------------------------------------------------------------------------

    def build(self, spec: dict[str, Any], total_steps: int | None = None) -> Program:
        """A Program for spec data on this backend (through the public `crosstrain.build`)."""
        import crosstrain

        return crosstrain.build(spec, backend=self.name, total_steps=total_steps)

    def fit(self, spec: dict[str, Any], data: Any, val_data: Any = None, **kwargs: Any) -> Any:
        """`crosstrain.fit` on this backend, writing no files."""
        import crosstrain

        return crosstrain.fit(
            spec, backend=self.name, data=data, val_data=val_data, run_dir=False, **kwargs
        )


def backend_name(config: Any) -> str | None:
    """The backend under test: `--crosstrain-backend`, else `$CROSSTRAIN_CONFORMANCE_BACKEND`."""
    return config.getoption("crosstrain_backend", None) or os.environ.get(BACKEND_ENV) or None


def reference_name(config: Any) -> str:
    """The reference backend: `--crosstrain-reference`, else the env variable, else torch."""
    return (
        config.getoption("crosstrain_reference", None) or os.environ.get(REFERENCE_ENV) or "torch"
    )
