"""`Callback`: a plain object whose `on_*` methods become hookimpls, registered for one fit.

Example:
    >>> class PrintLoss(Callback):
    ...     def on_epoch_end(self, stage, metrics):
    ...         if stage == "train":
    ...             print(metrics["train_loss"])

A misspelled hook name (`on_epoch_ned`) fails when the fit starts, not silently.
`FitCallbacks` registers one fit's callbacks (the spec's, the plugins', the caller's) and
removes them when it ends.
"""

from __future__ import annotations

import inspect
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crosstrain.errors import PluginError
from crosstrain.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from crosstrain.plugin.registry import Registry
    from crosstrain.spec.schema import Spec


class Callback:
    """Subclass and define any of the lifecycle hooks of `crosstrain.plugin.hookspecs` by name
    (the `on_*` hooks and `collect_metrics`).

    `needs` declares what the callback needs the backend to compute (a subset of `crosstrain.plugin.protocol.NEEDS`);
    core collects it before the build, so a backend is never asked by a callback's name.
    """

    needs: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in dir(cls):  # inherited from a mixin too, not only the class's own
            hook = name.startswith("on_") or name == "collect_metrics"
            value = inspect.getattr_static(cls, name) if hook else None
            if hook and callable(value) and not hasattr(value, "crosstrain_impl"):
                setattr(cls, name, hookimpl(_copied(value)))


def _copied(function: Any) -> Any:
    """A copy of a plain function to mark as a hookimpl, so a mixin's own function object is
    left as it was (marking it would make it a hook of every class that uses the mixin)."""
    if not isinstance(function, types.FunctionType):
        return function
    copy = types.FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__dict__.update(function.__dict__)
    copy.__kwdefaults__, copy.__qualname__ = function.__kwdefaults__, function.__qualname__
    return copy


class FitCallbacks:
    """Registers a fit's callbacks with the PluginManager and removes them afterwards."""

    def __init__(self, registry: Registry, spec: Spec, run_dir: Path | None, extra: list[Any]):
        self.pm = registry.pm
        made = self.pm.hook.crosstrain_make_callbacks(spec=spec, run_dir=run_dir)
        self.callbacks = [c for group in made for c in group] + list(extra)

    def __enter__(self) -> list[Any]:
        registered = []
        try:
            for callback in self.callbacks:
                self.pm.register(callback)
                registered.append(callback)
            self.pm.check_pending()
        except Exception as err:
            for callback in registered:
                self.pm.unregister(callback)
            name = type(self.callbacks[len(registered) - 1 if registered else 0]).__name__
            raise PluginError(name, "callback", str(err)) from None
        return self.callbacks

    def __exit__(self, *exc: Any) -> None:
        for callback in self.callbacks:
            if self.pm.is_registered(callback):
                self.pm.unregister(callback)


def last_update_lr(trainer: Any) -> float | None:
    """The learning rate the trainer's last optimizer update used, computed on the host as every
    backend applies it (`optimizer.lr` × the schedule's factor over `trainer.schedule_steps` ×
    `trainer.lr_scale`, a metric-driven schedule's multiplier);
    None before the first update. Skipped steps (`on_nan: skip`) are not updates."""
    from crosstrain.nn.optim import applied_lr

    updates = trainer.global_step - trainer.skipped_steps
    if updates <= 0:
        return None
    spec = trainer.spec
    total = trainer.schedule_steps or trainer.total_steps
    return trainer.lr_scale * applied_lr(spec.optimizer, spec.schedule, updates - 1, total)
