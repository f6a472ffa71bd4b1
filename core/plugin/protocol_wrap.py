"""Backends and programs that do not subclass `crosstrain.plugin.protocol.Backend`/`Program`.

Plugins written before the base classes existed register plain objects with the right
methods. `as_backend` checks such an object once, at registration: lacking an abstract member
it is refused (`PluginError` naming what is missing, so the plugin is listed as broken);
otherwise it is wrapped in a `Backend` subclass that delegates every member the object
defines and keeps the base class's default for the rest. Programs its `build` returns are
wrapped the same way (`as_program`). Methods are bound once, when wrapping: a step costs no
extra call. This is the one place that looks members up by name.
"""

from __future__ import annotations

from typing import Any

from crosstrain.errors import PluginError
from crosstrain.plugin.protocol import Backend, Program

BACKEND_REQUIRED = (
    "name",
    "extra",
    "is_available",
    "version",
    "capabilities",
    "accelerators_found",
    "build",
)
BACKEND_OPTIONAL = ("note", "check", "accelerator_details", "launch", "explain")
PROGRAM_REQUIRED = (
    "native_model",
    "train_step",
    "eval_step",
    "predict_step",
    "metrics_to_host",
    "get_state",
    "set_state",
)
ATTRIBUTES = frozenset(
    {"name", "extra", "note", "native_model", "array_kind", "world_size", "collective_state"}
)
PROGRAM_OPTIONAL = (
    "array_kind",
    "world_size",
    "collective_state",
    "train_steps",
    "set_lr_scale",
    "cache_data",
    "any_rank",
    "export",
    "state_for_write",
)


def missing_members(obj: Any, required: tuple[str, ...]) -> list[str]:
    """The names of `required` that `obj` lacks (a method must be callable)."""
    missing = []
    for member in required:
        if member in ATTRIBUTES:
            found = hasattr(obj, member)
        else:
            found = callable(getattr(obj, member, None))
        if not found:
            missing.append(member)
    return missing


class WrappedBackend(Backend):
    """A `Backend` around a plain object that has the members of one (see the module doc)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name, self.extra = inner.name, inner.extra
        for member in BACKEND_REQUIRED[2:] + BACKEND_OPTIONAL:
            if hasattr(inner, member):
                setattr(self, member, getattr(inner, member))

    # the abstract members, replaced per instance by the inner object's bound methods
    def is_available(self) -> tuple[bool, str]:  # pragma: no cover - always replaced
        return self.inner.is_available()

    def version(self) -> str | None:  # pragma: no cover - always replaced
        return self.inner.version()

    def capabilities(self) -> Any:  # pragma: no cover - always replaced
        return self.inner.capabilities()

    def accelerators_found(self) -> list[str]:  # pragma: no cover - always replaced
        return self.inner.accelerators_found()

    def build(self, spec: Any, env: Any) -> Program:  # pragma: no cover - replaced below
        return self.inner.build(spec, env)


def _build_wrapped(inner_build: Any, backend: str) -> Any:
    def build(spec: Any, env: Any) -> Program:
        return as_program(inner_build(spec, env), backend)

    build.__doc__ = inner_build.__doc__
    return build


class WrappedProgram(Program):
    """A `Program` around a plain object with the members of one (see the module doc)."""

    def __init__(self, inner: Any):
        self.inner = inner
        for member in PROGRAM_REQUIRED[1:] + PROGRAM_OPTIONAL:
            if hasattr(inner, member) and member not in ATTRIBUTES:
                setattr(self, member, getattr(inner, member))

    @property
    def native_model(self) -> Any:  # type: ignore[override]
        return self.inner.native_model

    @property
    def array_kind(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "array_kind", "numpy")

    @property
    def world_size(self) -> int:  # type: ignore[override]
        return getattr(self.inner, "world_size", 1)

    @property
    def collective_state(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.inner, "collective_state", False))

    def train_step(self, batch: Any) -> Any:  # pragma: no cover - replaced per instance
        return self.inner.train_step(batch)

    def eval_step(self, batch: Any) -> Any:  # pragma: no cover - replaced per instance
        return self.inner.eval_step(batch)

    def predict_step(self, batch: Any) -> Any:  # pragma: no cover - replaced per instance
        return self.inner.predict_step(batch)

    def metrics_to_host(self, outputs: list[Any]) -> dict[str, float]:  # pragma: no cover
        return self.inner.metrics_to_host(outputs)

    def get_state(self) -> Any:  # pragma: no cover - replaced per instance
        return self.inner.get_state()

    def set_state(self, state: Any) -> None:  # pragma: no cover - replaced per instance
        self.inner.set_state(state)

    def __getattr__(self, name: str) -> Any:
        """Anything else the plugin's own code reads (`program.step`, ...)."""
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def as_backend(obj: Any) -> Backend:
    """`obj` if it is a `Backend`, else the object wrapped (see the module doc).

    Raises:
        PluginError: `obj` lacks a member every backend must have.
    """
    if isinstance(obj, Backend):
        missing = [m for m in ("name", "extra") if not getattr(obj, m, "")]
    else:
        missing = missing_members(obj, BACKEND_REQUIRED)
    if missing:
        name = getattr(obj, "name", "") or type(obj).__name__
        raise PluginError(
            str(name),
            "backend",
            f"{type(obj).__name__} lacks {', '.join(missing)}: subclass "
            "crosstrain.plugin.protocol.Backend and define them",
        )
    if isinstance(obj, Backend):
        return obj
    wrapped = WrappedBackend(obj)
    wrapped.build = _build_wrapped(obj.build, str(obj.name))  # type: ignore[method-assign]
    return wrapped


def as_program(obj: Any, backend: str) -> Program:
    """`obj` if it is a `Program`, else the object wrapped (see the module doc).

    Raises:
        PluginError: `obj` lacks a member every program must have.
    """
    if isinstance(obj, Program):
        return obj
    missing = missing_members(obj, PROGRAM_REQUIRED)
    if missing:
        raise PluginError(
            backend,
            "backend",
            f"build returned a {type(obj).__name__} that lacks {', '.join(missing)}: "
            "subclass crosstrain.plugin.protocol.Program and define them",
        )
    return WrappedProgram(obj)
