"""The built-in vocabulary (layers, optimizers, schedules, losses, metrics, loggers) and the callbacks of a fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crosstrain.nn.layers import BUILTIN_LAYERS
from crosstrain.nn.losses import BUILTIN_LOSSES
from crosstrain.nn.metrics import BUILTIN_METRICS
from crosstrain.nn.optimizers import BUILTIN_OPTIMIZERS
from crosstrain.nn.schedules import BUILTIN_SCHEDULES
from crosstrain.plugin.hookspecs import hookimpl


@hookimpl
def crosstrain_add_layers(registry: Any) -> None:
    for layer_class in BUILTIN_LAYERS:
        registry.layers.add(layer_class)


@hookimpl
def crosstrain_add_optimizers(registry: Any) -> None:
    for cls in BUILTIN_OPTIMIZERS:
        registry.optimizers.add(cls)


@hookimpl
def crosstrain_add_schedules(registry: Any) -> None:
    for cls in BUILTIN_SCHEDULES:
        registry.schedules.add(cls)


@hookimpl
def crosstrain_add_losses(registry: Any) -> None:
    for name, fn in BUILTIN_LOSSES.items():
        registry.losses.add(name, fn)


@hookimpl
def crosstrain_add_metrics(registry: Any) -> None:
    for name, fn in BUILTIN_METRICS.items():
        registry.metrics.add(name, fn)


@hookimpl
def crosstrain_make_callbacks(spec: Any, run_dir: Path | None) -> list[Any]:
    from crosstrain.plugin.registry import get_registry

    from .checkpointing import ModelCheckpoint, StepCheckpoint
    from .early_stopping import EarlyStopping
    from .progress import ProgressBar

    trainer = spec.trainer
    callbacks: list[Any] = []
    if trainer.profile:
        from .profiler import Profiler

        callbacks.append(Profiler(run_dir))
    if trainer.progress:
        callbacks.append(ProgressBar())
    if run_dir is not None:
        from crosstrain.train.loggers import make_logger

        loggers = get_registry().loggers
        for item in trainer.loggers:
            callbacks.append(make_logger(loggers.get(item.name), item.options, run_dir, spec))
    if trainer.checkpoint is not None:
        # without a run directory it writes nothing, but still takes part in gathering a
        # sharded (FSDP) state on ranks > 0
        checkpoints = ModelCheckpoint(trainer.checkpoint)
        callbacks.append(checkpoints)
        if trainer.checkpoint.every_n_steps or trainer.checkpoint.every_minutes:
            callbacks.append(StepCheckpoint(checkpoints))  # a per-step hook only when asked
    if spec.schedule is not None and spec.schedule.metric_driven:
        from .plateau import ReduceLROnPlateau

        callbacks.append(ReduceLROnPlateau(spec.schedule, spec.optimizer.lr))
    if trainer.early_stopping is not None:
        callbacks.append(EarlyStopping(trainer.early_stopping))
    named = get_registry().callbacks
    callbacks += [named.get(item.name)(item.options, spec, run_dir) for item in trainer.callbacks]
    return callbacks
