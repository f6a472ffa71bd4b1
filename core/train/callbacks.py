"""`Callback`: a plain object whose `on_*` methods become hookimpls, registered for one fit.

Example:
    >>> class PrintLoss(Callback):
    ...     def on_epoch_end(self, stage, metrics):
    ...         if stage == "train":
    ...             print(metrics["train_loss"])

A misspelled hook name (`on_epoch_ned`) fails when the fit starts, not silently.
"""

from __future__ import annotations

from typing import Any

from crosstrain.plugin.hookspecs import hookimpl


class Callback:
    """Subclass and define any of the lifecycle hooks of `crosstrain.plugin.hookspecs` by name
    (the `on_*` hooks and `collect_metrics`).

    `needs` declares what the callback needs the backend to compute (a subset of `crosstrain.plugin.protocol.NEEDS`);
    core collects it before the build, so a backend is never asked by a callback's name.
    """

    needs: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            hook = name.startswith("on_") or name == "collect_metrics"
            if hook and callable(value) and not hasattr(value, "crosstrain_impl"):
                setattr(cls, name, hookimpl(value))
