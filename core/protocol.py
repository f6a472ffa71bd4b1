"""The contract between core and a backend: Backend, Program, Capabilities, RunEnv.

A backend turns a spec into a Program (native model, optimizer, compiled steps) and converts
its state to and from the canonical form. The loop, data order, hooks and checkpoints stay in
core; a backend never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from .spec import Spec
    from .state import CanonicalState

Batch = tuple[Any, Any]
"""`(inputs, targets)` as numpy arrays, sample axis first (targets may be None for predict)."""

StepOutput = Any
"""What a step returns: device values only the Program's own `metrics_to_host` understands."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares it supports; the trainer and the conformance suite read this."""

    layers: frozenset[str]
    precisions: frozenset[str] = frozenset({"32"})
    accelerators: frozenset[str] = frozenset({"cpu"})
    strategies: frozenset[str] = frozenset({"auto"})
    optimizers: frozenset[str] = frozenset({"sgd", "adam", "adamw", "rmsprop"})
    steps_per_execution: bool = False
    compile: bool = False
    native_models: bool = False
    losses: frozenset[str] | None = None
    """Loss names the backend can train with; None: any array-API loss."""
    grad_norm: bool = False
    """Train steps can report `grad_norm` (the global gradient norm before clipping) when
    `RunEnv.extras["grad_norm"]` is set, as the `grad_norm` callback asks."""

    def check(self, spec: Spec, backend: str) -> None:
        """Raises UnsupportedFeature for the first thing `spec` asks that is not declared."""
        from .errors import UnsupportedFeature
        from .model import plan, walk

        def need(ok: bool, feature: str, supported: frozenset[str] | None = None) -> None:
            if not ok:
                raise UnsupportedFeature(backend, feature, sorted(supported) if supported else None)

        t = spec.trainer
        if spec.model is not None:
            for node in walk(plan(spec.model)):
                need(
                    node.layer.type in self.layers,
                    f"layer {node.layer.type} ({node.path})",
                    self.layers,
                )
        need(t.precision in self.precisions, f"precision {t.precision!r}", self.precisions)
        need(
            t.accelerator == "auto" or t.accelerator in self.accelerators,
            f"accelerator {t.accelerator!r}",
            self.accelerators,
        )
        need(
            t.strategy == "auto" or t.strategy in self.strategies,
            f"strategy {t.strategy!r}",
            self.strategies,
        )
        need(
            spec.optimizer.name in self.optimizers,
            f"optimizer {spec.optimizer.name!r}",
            self.optimizers,
        )
        need(
            t.steps_per_execution == 1 or self.steps_per_execution,
            "trainer.steps_per_execution > 1",
        )
        need(not t.compile or self.compile, "trainer.compile")
        need(
            self.grad_norm or all(c.name != "grad_norm" for c in t.callbacks),
            "the grad_norm callback (gradient norm in the train step)",
        )
        need(
            self.losses is None or spec.loss.name in self.losses,
            f"loss {spec.loss.name!r}",
            self.losses,
        )


@dataclass
class RunEnv:
    """Where and how one run executes, resolved from the spec's trainer section and flags."""

    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32"
    strategy: str = "auto"
    seed: int = 0
    run_dir: Path | None = None
    native_model: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Program(Protocol):
    """A built model with its optimizer and compiled steps, for one backend.

    Optional attributes the trainer reads when present (a backend may define none of them):
    `cache_data(x, y)` (keep a data set on the device), `array_kind`, and, for a program that
    runs as one of several processes, `world_size`, `any_rank(flag) -> bool` (a flag or'ed over
    all ranks, so a signal stops every rank after the same step) and `collective_state` (True
    when `get_state` is a collective that every rank must call together, e.g. FSDP shards).
    """

    native_model: Any

    def train_step(self, batch: Batch) -> StepOutput:
        """One optimizer step; returns device metrics (`loss` and each metric) without syncing."""

    def train_steps(self, batches: Batch) -> StepOutput:
        """K optimizer steps in one call (only if `Capabilities.steps_per_execution`).

        `batches` is `(x, y)` stacked with a leading axis of K equal-sized batches; the output
        counts as K steps in `metrics_to_host`.
        """

    def eval_step(self, batch: Batch) -> StepOutput:
        """Loss and metrics on a batch, no update, no dropout."""

    def predict_step(self, batch: Batch) -> np.ndarray:
        """Model outputs for `batch[0]` as a numpy array."""

    def metrics_to_host(self, outputs: list[StepOutput]) -> dict[str, float]:
        """The one sync point: mean of `loss` and metrics over the outputs, weighted by batch size."""

    def get_state(self) -> CanonicalState:
        """Parameters, optimizer slots, step and RNG in canonical form (numpy)."""

    def set_state(self, state: CanonicalState) -> None:
        """Loads a canonical state (possibly written by another backend)."""


@runtime_checkable
class Backend(Protocol):
    """A framework behind crosstrain. Registered through `crosstrain_add_backends`."""

    name: str
    extra: str
    """The pip extra that installs its framework: `pip install 'crosstrain[<extra>]'`."""

    def is_available(self) -> tuple[bool, str]:
        """Whether the framework can be imported, and why not; must not import it."""

    def version(self) -> str | None:
        """The framework's version, from package metadata (no import)."""

    def capabilities(self) -> Capabilities:
        """The declared capabilities (no framework import)."""

    def accelerators_found(self) -> list[str]:
        """Accelerators usable right now (may import the framework)."""

    def build(self, spec: Spec, env: RunEnv) -> Program:
        """A Program for the spec, or UnsupportedFeature before any training."""
