"""What a backend declares it supports (`Capabilities`, `ExportFormat`) and what a fit's
callbacks need from its steps (`callback_needs`); `Capabilities.check` refuses the first thing a
spec asks that is not declared, before any framework is imported."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crosstrain.spec.schema import Spec


@dataclass(frozen=True)
class ExportFormat:
    """A native file format a backend's `Program.export` writes.

    Attributes:
        name: what `crosstrain export --to` takes (`torch`, `flax`, `keras`).
        suffix: the file name ending of the default output (`.safetensors`, `.keras`).
        description: how to load the file, for `crosstrain export --help` and the docs.
    """

    name: str
    suffix: str
    description: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares it supports; the trainer and the conformance suite read this."""

    layers: frozenset[str]
    precisions: frozenset[str] = frozenset({"32"})
    accelerators: frozenset[str] = frozenset({"cpu"})
    strategies: frozenset[str] = frozenset({"auto"})
    optimizers: frozenset[str] | None = None
    """Optimizer names the backend can train with; None: any registered optimizer (each is an
    array-API rule the backend runs in its own step)."""
    steps_per_execution: bool = False
    lr_scale: bool = False
    """`Program.set_lr_scale` exists: metric-driven schedules (`reduce_on_plateau`)."""
    accumulate_grad_batches: bool = False
    """`Program.accumulate_step` exists: several micro-batches per optimizer update."""
    compile: bool = False
    native_models: bool = False
    losses: frozenset[str] | None = None
    """Loss names the backend can train with; None: any array-API loss."""
    grad_norm: bool = False
    """Train steps can report `grad_norm` (the global gradient norm before clipping) when
    `RunEnv.report_grad_norm` is set, as a callback that needs it (`grad_norm`) asks."""
    exports: tuple[ExportFormat, ...] = ()
    """Native formats `Program.export` writes (`crosstrain export --to <format>`)."""
    shared_dropout_masks: bool = False
    """Dropout draws `crosstrain.nn.dropout`'s masks under `model.dropout_masks: shared`."""

    def export_format(self, name: str) -> ExportFormat | None:
        """The declared export format called `name`, or None."""
        return next((f for f in self.exports if f.name == name), None)

    def check(self, spec: Spec, backend: str, needs: frozenset[str] | None = None) -> None:
        """Raises UnsupportedFeature for the first thing `spec` asks that is not declared;
        `needs`: what the fit's callbacks need (default: those `spec` names, `callback_needs`)."""
        from crosstrain.errors import UnsupportedFeature

        def need(ok: bool, feature: str, supported: frozenset[str] | None = None) -> None:
            if not ok:
                raise UnsupportedFeature(backend, feature, sorted(supported) if supported else None)

        t = spec.trainer
        if spec.model is not None:
            for node in spec.model.layer_nodes():
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
            self.optimizers is None or spec.optimizer.name in self.optimizers,
            f"optimizer {spec.optimizer.name!r}",
            self.optimizers,
        )
        need(
            spec.schedule is None or not spec.schedule.metric_driven or self.lr_scale,
            f"schedule {spec.schedule.name if spec.schedule else None!r} (Program.set_lr_scale)",
        )
        need(
            t.steps_per_execution == 1 or self.steps_per_execution,
            "trainer.steps_per_execution > 1",
        )
        need(
            t.accumulate_grad_batches == 1 or self.accumulate_grad_batches,
            "trainer.accumulate_grad_batches > 1",
        )
        need(not t.compile or self.compile, "trainer.compile")
        need(
            spec.model is None or spec.model.dropout_masks == "native" or self.shared_dropout_masks,
            "model.dropout_masks: shared",
        )
        if needs is None:
            needs = callback_needs(spec)
        need(
            self.grad_norm or "grad_norm" not in needs,
            "the grad_norm callback (gradient norm in the train step)",
        )
        need(
            self.losses is None or spec.loss.name in self.losses,
            f"loss {spec.loss.name!r}",
            self.losses,
        )


NEEDS = frozenset({"grad_norm"})
"""What a callback may need the backend's steps to compute: `grad_norm` (the train step reports
the global gradient norm before clipping, `RunEnv.report_grad_norm`)."""


def callback_needs(spec: Any, callbacks: Iterable[Any] = ()) -> frozenset[str]:
    """The union of `needs` of the callbacks `spec.trainer.callbacks` names (their registered
    factories) and of `callbacks` (objects passed to `fit`); an unknown need is a PluginError."""
    from crosstrain.errors import PluginError
    from crosstrain.plugin.registry import get_registry

    table = get_registry().callbacks
    found: set[str] = set()
    sources = [table.find(item.name) for item in spec.trainer.callbacks] + list(callbacks)
    for source in sources:
        needs = frozenset(getattr(source, "needs", ()) or ())
        unknown = needs - NEEDS
        if unknown:
            name = getattr(source, "__name__", type(source).__name__)
            raise PluginError(
                name, "callback", f"needs {sorted(unknown)}: not one of {sorted(NEEDS)}"
            )
        found |= needs
    return frozenset(found)
