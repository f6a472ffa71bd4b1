"""`Callback`: a plain object whose `on_*` methods become hookimpls, registered for one fit.

Example:
    >>> class PrintLoss(Callback):
    ...     def on_epoch_end(self, stage, metrics):
    ...         if stage == "train":
    ...             print(metrics["train_loss"])

A misspelled hook name (`on_epoch_ned`) fails when the fit starts, not silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crosstrain.hookspecs import hookimpl

NEEDS = frozenset({"grad_norm"})
"""What a callback may need the backend's steps to compute: `grad_norm` (the train step reports
the global gradient norm before clipping, `RunEnv.report_grad_norm`)."""


class Callback:
    """Subclass and define any of the lifecycle hooks of `crosstrain.hookspecs` by name
    (the `on_*` hooks and `collect_metrics`).

    `needs` declares what the callback needs the backend to compute (a subset of `NEEDS`);
    core collects it before the build, so a backend is never asked by a callback's name.
    """

    needs: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            hook = name.startswith("on_") or name == "collect_metrics"
            if hook and callable(value) and not hasattr(value, "crosstrain_impl"):
                setattr(cls, name, hookimpl(value))


def callback_needs(spec: Any, callbacks: Iterable[Any] = ()) -> frozenset[str]:
    """The union of `needs` of the callbacks `spec.trainer.callbacks` names (their registered
    factories) and of `callbacks` (objects passed to `fit`); an unknown need is a PluginError."""
    from crosstrain.errors import PluginError
    from crosstrain.registry import get_registry

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
