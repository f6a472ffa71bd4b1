"""Every crosstrain hook, declared once.

Plugins implement these with `@crosstrain.hookimpl`; a `Callback` subclass gets its `on_*`
methods marked automatically. pluggy passes an implementation only the arguments it names,
so `def on_epoch_end(self, metrics)` is a valid implementation. Unknown hook names fail at
start-up (`check_pending`). The default behaviour (progress bar, CSV log, checkpoints, early
stopping, the built-in backends, layers, optimizers, schedules, losses and data sources) lives in built-in plugins
registered through these same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from crosstrain.plugin.protocol import Backend
    from crosstrain.plugin.registry import Registry
    from crosstrain.spec.schema import Spec
    from crosstrain.train.trainer import FitResult, Trainer

hookspec = pluggy.HookspecMarker("crosstrain")
hookimpl = pluggy.HookimplMarker("crosstrain")


# ---------------------------------------------------------------------------------------------
# Registration: called once when the registry is built, before any spec is validated.
# ---------------------------------------------------------------------------------------------


@hookspec
def crosstrain_add_backends() -> list[Backend]:
    """Return the backends this plugin provides.

    Returns:
        A list of objects following `protocol.Backend`. All results are collected. A backend
        object must not import its framework here; it says `is_available()` without importing.
    Called by: `registry.build_registry`.
    """


@hookspec
def crosstrain_add_layers(registry: Registry) -> None:
    """Add layer types with `registry.layers.add(LayerClass)`.

    Args:
        registry: the registry being built. A layer class subclasses `crosstrain.nn.layers.Layer`
            with `type: Literal["Name"]`; each backend that supports it looks it up by that name.
    Called by: `registry.build_registry`, once per plugin; a failure marks only that plugin broken.
    """


@hookspec
def crosstrain_add_optimizers(registry: Registry) -> None:
    """Add optimizers with `registry.optimizers.add(OptimizerClass)`.

    Args:
        registry: the registry being built. An optimizer class subclasses
            `crosstrain.nn.optimizers.Optimizer` with `name: Literal["name"]`, declares its
            per-parameter `slots` and writes `update` (and `init` when a slot does not start at
            zero) against the array API; every backend runs it in its own compiled step, and
            its slots are the checkpoint's canonical optimizer state.
    Called by: `registry.build_registry`, once per plugin; a failure marks only that plugin broken.
    """


@hookspec
def crosstrain_add_schedules(registry: Registry) -> None:
    """Add learning-rate schedules with `registry.schedules.add(ScheduleClass)`.

    Args:
        registry: the registry being built. A schedule class subclasses
            `crosstrain.nn.schedules.Schedule` with `name: Literal["name"]`, writes
            `_after_warmup(xp, t, steps)` (the lr factor) against the array API and says
            whether it needs the run's length (`run_length` / `needs_run_length`).
    Called by: `registry.build_registry`, once per plugin; a failure marks only that plugin broken.
    """


@hookspec
def crosstrain_add_losses(registry: Registry) -> None:
    """Add losses with `registry.losses.add(name, fn)`; `fn(xp, outputs, targets, **options)`.

    Args:
        registry: the registry being built.
    Called by: `registry.build_registry`.
    """


@hookspec
def crosstrain_add_metrics(registry: Registry) -> None:
    """Add metrics with `registry.metrics.add(name, fn)`; same signature as losses.

    Args:
        registry: the registry being built.
    Called by: `registry.build_registry`.
    """


@hookspec
def crosstrain_add_data_sources(registry: Registry) -> None:
    """Add data sources with `registry.data_sources.add(kind, source)` (`data.DataSource`).

    Args:
        registry: the registry being built. `kind` is the part of `data.source` before `:`.
    Called by: `registry.build_registry`.
    """


@hookspec
def crosstrain_add_data_adapters(registry: Registry) -> None:
    """Add data adapters with `registry.data_adapters.add(name, adapter)` (`batches.DataAdapter`).

    Args:
        registry: the registry being built. An adapter recognises a library's loaders or data
            sets given as `fit(data=...)` (without importing the library), turns them into a
            re-iterable of batches, and converts that library's tensors into what a backend's
            Program takes (`Program.array_kind`: `torch`, `jax` or `numpy`) with few copies.
    Called by: `registry.build_registry`.
    """


@hookspec
def crosstrain_add_loggers(registry: Registry) -> None:
    """Add loggers with `registry.loggers.add(name, factory)`, named in `trainer.loggers`.

    Args:
        registry: the registry being built. A factory with an `options_model` (a subclass of
            `crosstrain.Logger`) is called `factory(run_dir: Path, spec: Spec, options: dict)`
            with the item's keys besides `name` (`{name: jsonl, every_n_epochs: 2}`), which are
            validated against `options_model` with the spec, errors named like
            `trainer.loggers[1].every_n_epochs`; any other factory is called
            `factory(run_dir, spec)` and takes no options. It returns a Callback that is
            registered for one fit.
    Called by: `registry.build_registry`.
    """


@hookspec
def crosstrain_add_callbacks(registry: Registry) -> None:
    """Add callbacks that a spec names in `trainer.callbacks` with `registry.callbacks.add(name, factory)`.

    Args:
        registry: the registry being built. `factory(options: dict, spec: Spec, run_dir: Path |
            None)` returns the Callback for one fit; `options` are the item's keys besides
            `name` (`{name: timer, max_time: 60}` → `{"max_time": 60}`). When the factory has an
            `options_model` attribute (a pydantic model), the options are validated against it
            with the spec, errors named like `trainer.callbacks[1].max_time`.
    Called by: `registry.build_registry`.
    """


@hookspec
def crosstrain_add_launchers(registry: Registry) -> None:
    """Add launchers that start a fit's worker processes with `registry.launchers.add(name, launcher)`.

    Args:
        registry: the registry being built. `launcher` is a `crosstrain.plugin.protocol.Launcher`
            (`fit(spec, request)` runs the fit in its workers and returns the FitResult);
            `crosstrain fit --launcher NAME` and `crosstrain.fit(..., launcher=NAME)` pick it.
    Called by: `registry.build_registry`.
    """


@hookspec
def crosstrain_add_commands(registry: Registry) -> None:
    """Add subcommands of the `crosstrain` command line with `registry.commands.add(name, command)`.

    Args:
        registry: the registry being built. `command` is a `crosstrain.plugin.command.Command`
            (`name`, `help`, `configure(parser)`, `run(args) -> exit status`), the same record
            every built-in command module exposes in `COMMANDS`. A name a built-in command has
            is skipped with a warning. `configure` runs for `crosstrain --help`, so it must not
            import an ML framework.
    Called by: `registry.build_registry`; the command line builds its parser from the table
    when the command word is not a built-in one (and for `crosstrain --help`).
    """


@hookspec
def crosstrain_make_callbacks(spec: Spec, run_dir: Path | None) -> list[Any]:
    """Return the callbacks this plugin wants registered for one fit of `spec`.

    Args:
        spec: the validated spec of the fit (read `spec.trainer` for what is asked for).
        run_dir: the run directory (`runs/<name>/<time>/`), or None when the fit writes no files.
    Returns:
        A list of Callback objects (possibly empty). All results are collected; the callbacks
        are registered with the PluginManager for the fit and unregistered after it.
    Called by: `crosstrain.api.fit`, evaluate and predict. The built-in plugin answers with
    the progress bar, the loggers named in `trainer.loggers`, early stopping and checkpoints.
    """


# ---------------------------------------------------------------------------------------------
# Lifecycle of one fit, in the order the trainer calls them. Every result is ignored.
#   on_fit_start
#   per epoch: on_epoch_start(train) · on_batch_end(train)* ·
#              [on_epoch_start(val) · on_batch_end(val)* · on_epoch_end(val)] · on_epoch_end(train)
#              · on_checkpoint(save); collect_metrics(step) at each train metric pull and
#              collect_metrics(epoch) before the epoch's metrics go into history
#   on_fit_end, or on_exception then the error propagates (after an interrupt checkpoint).
# evaluate/predict use stage "test"/"predict" with on_epoch_start, on_batch_end, on_epoch_end.
# ---------------------------------------------------------------------------------------------


@hookspec
def on_fit_start(trainer: Trainer) -> None:
    """The trainer is ready: program built, data loaded, state restored when resuming.

    Args:
        trainer: the running `Trainer` (spec, program, run_dir, epoch, global_step ...).
    """


@hookspec
def on_epoch_start(trainer: Trainer, stage: str, epoch: int) -> None:
    """A pass over data begins.

    Args:
        trainer: the running trainer.
        stage: `train`, `val`, `test` or `predict`.
        epoch: 0-based epoch index.
    """


@hookspec
def on_batch_end(
    trainer: Trainer, stage: str, batch_index: int, logs: dict[str, float] | None
) -> None:
    """A batch has been dispatched. Skipped entirely when no plugin implements it.

    Args:
        trainer: the running trainer (`trainer.global_step` counts optimizer steps).
        stage: `train`, `val`, `test` or `predict`.
        batch_index: 0-based index within the epoch.
        logs: host metrics (`train_loss`, ...) averaged since the last pull when the trainer
            pulled them after this batch (every `log_every_n_steps`), else None. Pulling is the
            only host sync, so an implementation must not force one.
    """


@hookspec
def on_epoch_end(trainer: Trainer, stage: str, epoch: int, metrics: dict[str, float]) -> None:
    """A pass over data ended.

    Args:
        trainer: the running trainer; set `trainer.should_stop = True` to end the fit.
        stage: `val` (then `metrics` has the val metrics) or `train` (then `metrics` has the
            train and val metrics of the epoch, as they go into `history`); `test`, `predict`.
        epoch: 0-based epoch index.
        metrics: host floats keyed `<split>_<name>`.
    """


@hookspec
def collect_metrics(
    trainer: Trainer, stage: str, interval: str, metrics: dict[str, float]
) -> dict[str, float] | None:
    """Extra host values to log alongside the metrics of this pull or epoch (`lr`, throughput ...).

    Args:
        trainer: the running trainer.
        stage: `train` (the only stage it is called for so far).
        interval: `step` at each training metric pull (the values are merged into the `logs`
            that `on_batch_end` receives), or `epoch` at the end of a training epoch after
            validation (merged into the epoch's metrics before they go into `history`,
            `on_epoch_end` and every logger).
        metrics: the host metrics of this pull or epoch, keyed `<split>_<name>` (read only).
    Returns:
        A mapping of name → float (or None). All results are merged, later plugins winning a
        clash. An implementation must not force a host sync (no reads of device values): the
        trainer calls it right after its own sync.
    """


@hookspec
def on_checkpoint(trainer: Trainer, stage: str, path: Any) -> None:
    """A checkpoint was written (`stage="save"`) or restored (`stage="load"`).

    Args:
        trainer: the running trainer.
        stage: `save` or `load`.
        path: the checkpoint directory (`pathlib.Path`).
    """


@hookspec
def on_exception(trainer: Trainer, exception: BaseException) -> None:
    """The fit is failing with `exception` (KeyboardInterrupt included); it propagates afterwards.

    Args:
        trainer: the running trainer.
        exception: what was raised.
    """


@hookspec
def on_fit_end(trainer: Trainer, result: FitResult) -> None:
    """The fit ended normally (also after early stopping).

    Args:
        trainer: the running trainer.
        result: the `FitResult` that `fit` returns.
    """
