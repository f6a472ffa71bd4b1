"""`NumpyBackend`: the declared capabilities and `build`."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING

from crosstrain.plugin.protocol import Backend, Capabilities, RunEnv

if TYPE_CHECKING:
    from crosstrain.spec.schema import Spec

    from .program import NumpyProgram

CAPABILITIES = Capabilities(
    layers=frozenset({"Dense", "ReLU", "Tanh"}),
    precisions=frozenset({"32"}),
    accelerators=frozenset({"cpu"}),
    strategies=frozenset({"auto"}),
    optimizers=frozenset({"sgd", "adam"}),
    losses=frozenset({"cross_entropy", "mse"}),
)


class NumpyBackend(Backend):
    """A crosstrain backend in pure numpy (`backend="numpy"`)."""

    name = "numpy"
    extra = "numpy"

    def is_available(self) -> tuple[bool, str]:
        """Always available: numpy is a dependency of crosstrain itself."""
        return True, ""

    def version(self) -> str | None:
        """numpy's version (from package metadata)."""
        return importlib.metadata.version("numpy")

    def capabilities(self) -> Capabilities:
        """Dense/ReLU/Tanh, cross-entropy/mse, sgd/adam, float32 on the CPU."""
        return CAPABILITIES

    def accelerators_found(self) -> list[str]:
        """Only the CPU."""
        return ["cpu"]

    def build(self, spec: Spec, env: RunEnv) -> NumpyProgram:
        """A NumpyProgram; UnsupportedFeature for anything not declared."""
        from crosstrain.errors import SpecError, SpecIssue, UnsupportedFeature

        backend = env.backend or self.name
        self.capabilities().check(spec, backend)
        if env.native_model is not None:
            raise UnsupportedFeature(backend, "native models")
        if env.devices != 1:
            raise UnsupportedFeature(backend, f"devices={env.devices}", ["devices=1"])
        if spec.model is None:
            raise SpecError(SpecIssue("model", "the numpy backend needs a model in the spec"))
        from .program import NumpyProgram

        return NumpyProgram(spec, env, backend)
