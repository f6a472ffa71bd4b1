"""The Python API: `fit`, `build`, `evaluate`, `predict`. The CLI calls exactly these."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .batches import as_inputs, check_streams
from .callbacks import callback_needs
from .errors import CheckpointError, CrosstrainError, PluginError
from .protocol import Program, RunEnv
from .registry import Registry, get_registry, package_version
from .resolve import load_data
from .resume import announce, plan_resume
from .run_length import RunLength, dev_run_spec, run_length
from .rundir import locked_run_dir, run_directory
from .spec import Spec, load_spec
from .state import checkpoint_step, latest_checkpoint, list_checkpoints
from .trainer import FitResult, Trainer

DEFAULT_BACKEND = "torch"


def _split_target(target: Any, spec: Any) -> tuple[Spec, Any]:
    """(spec, native model or None) from whatever was passed to fit/build."""
    if isinstance(target, (Spec, dict, str, Path)) or hasattr(target, "to_spec"):
        return load_spec(target), None
    return load_spec(spec if spec is not None else {}), target


def backend_name(spec: Spec, backend: str | None) -> str:
    """The backend to use: argument, else `CROSSTRAIN_BACKEND`, else the spec's, else torch."""
    return backend or os.environ.get("CROSSTRAIN_BACKEND") or spec.backend or DEFAULT_BACKEND


def _resolve_backend(registry: Registry, name: str) -> Any:
    from .errors import BackendUnavailable

    backend = registry.backend(name)
    available, reason = backend.is_available()
    if not available:
        raise BackendUnavailable(name, reason, backend.extra)
    return backend


def _checked_backend(
    registry: Registry, name: str, spec: Spec, needs: frozenset[str] | None = None
) -> Any:
    backend = _resolve_backend(registry, name)
    backend.capabilities().check(spec, name, needs)
    return backend


def make_env(
    spec: Spec,
    native_model: Any = None,
    run_dir: Path | None = None,
    backend: str = "",
    *,
    length: RunLength | None = None,
    needs: frozenset[str] | None = None,
) -> RunEnv:
    """The RunEnv of a build: the trainer settings, the run length the schedule decays over
    (the one the trainer runs, `run_length`) and what the callbacks need (`callback_needs`)."""
    t = spec.trainer
    needs = callback_needs(spec) if needs is None else needs
    return RunEnv(
        accelerator=t.accelerator,
        devices=t.devices,
        precision=t.precision,
        strategy=t.strategy,
        seed=spec.seed,
        run_dir=run_dir,
        native_model=native_model,
        backend=backend,
        total_steps=length.total_steps if length else None,
        steps_per_epoch=(length.steps_per_epoch or None) if length else None,
        report_grad_norm="grad_norm" in needs,
    )


def build(
    target: Any, backend: str | None = None, *, spec: Any = None, total_steps: int | None = None
) -> Program:
    """The Program for a spec (or a native model plus `spec`), for people who write their own loop.

    Example:
        >>> program = build("examples/digits_mlp.yaml", backend="torch")  # doctest: +SKIP
        >>> out = program.train_step((x_batch, y_batch)); program.metrics_to_host([out])  # doctest: +SKIP
    """
    spec_obj, native = _split_target(target, spec)
    name = backend_name(spec_obj, backend)
    length = RunLength(0, total_steps) if total_steps else None
    env = make_env(spec_obj, native, backend=name, length=length)
    return _checked_backend(get_registry(), name, spec_obj).build(spec_obj, env)


DISTRIBUTED_WORKER_ENV = "CROSSTRAIN_DISTRIBUTED_WORKER"
"""Set by a backend in a process that joined a multi-process group; the command line then ends
the process without interpreter finalization (`crosstrain.cli.end_worker`)."""


def launcher_environment() -> tuple[int, int, int] | None:
    """`(rank, world_size, local_rank)` set by a launcher: torchrun's `RANK`/`WORLD_SIZE`/
    `LOCAL_RANK`, else SLURM's `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID` (with `MASTER_ADDR`
    and `MASTER_PORT` exported by the job script); None when no launcher started this process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "MASTER_ADDR" in env:
        return (
            int(env["SLURM_PROCID"]),
            int(env["SLURM_NTASKS"]),
            int(env.get("SLURM_LOCALID", 0)),
        )
    return None


def process_rank(spec: Spec) -> int:
    """This process's rank in a multi-process run: the launcher's rank when it started several
    processes (`launcher_environment`), else `RANK`/`SLURM_PROCID` when the spec asks for a
    strategy or several devices; 0 otherwise. Only rank 0 writes files."""
    found = launcher_environment()
    if found is not None and found[1] > 1:
        return found[0]
    if spec.trainer.strategy == "auto" and spec.trainer.devices == 1:
        return 0
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def _quiet(spec: Spec) -> Spec:
    """The spec as a worker of rank > 0 runs it: no progress, no loggers. It writes no files (it
    has no run directory); its checkpoint callback only takes part in gathering a sharded state
    (`Trainer.save_checkpoint`)."""
    trainer = spec.trainer.model_copy(update={"progress": False, "loggers": []})
    return spec.model_copy(update={"trainer": trainer})


def write_run_files(path: Path, spec: Spec) -> None:
    """The resolved spec (`spec.yaml`) and the model table (`summary.txt`) of a run."""
    from .summary import model_summary_text

    (path / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    table = model_summary_text(spec)
    if table is not None:
        (path / "summary.txt").write_text(table + "\n", encoding="utf-8")


def find_checkpoint(spec: Spec, resume: str | Path) -> Path:
    """A checkpoint directory from `latest`, a checkpoint dir, a checkpoints dir or a run dir."""
    if str(resume) == "latest":
        runs = Path(spec.trainer.run_dir) / spec.name
        found = [c for run in sorted(runs.glob("*")) for c in list_checkpoints(run / "checkpoints")]
        if not found:
            raise CheckpointError(
                f"latest: no checkpoint under {runs}/*/checkpoints (trainer.run_dir, --run-dir)"
            )
        return max(found, key=lambda p: (checkpoint_step(p), p.stat().st_mtime))
    path = Path(resume)
    if (path / "trainer.json").is_file():
        return path
    for candidate in (path, path / "checkpoints"):
        latest = latest_checkpoint(candidate)
        if latest is not None:
            return latest
    raise CheckpointError(
        f"{path}: not a checkpoint (no trainer.json) and no step-<N>/ checkpoint inside"
    )


class _Callbacks:
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


def fit(
    target: Any,
    backend: str | None = None,
    data: Any = None,
    val_data: Any = None,
    *,
    spec: Any = None,
    callbacks: list[Any] | tuple[Any, ...] = (),
    resume: str | Path | None = None,
    resume_changed: bool = False,
    run_dir: Path | str | bool | None = None,
) -> FitResult:
    """Trains a spec (path, dict, Spec, `Module`) or a native model on a backend.

    Args:
        target: the spec, or a native model (then `spec` gives loss, optimizer, trainer).
        backend: `torch`, `jax`, `keras[:engine]` or a plugin's; default as `backend_name`.
        data, val_data: `(x, y)` numpy arrays instead of `spec.data.source`.
        callbacks: extra Callback objects for this fit.
        resume: `latest` or a checkpoint/run directory to continue from; the run goes on in
            the checkpoint's run directory unless `run_dir` says otherwise.
        resume_changed: resume although the spec differs from the checkpoint's in more than
            run length, devices and reporting (a model with other parameters is always refused).
        run_dir: where files go (default `runs/<name>/<time>/`); False writes nothing.

    Returns:
        FitResult with `metrics`, `history`, `state` (canonical) and `native_model`.

    Example:
        >>> result = fit("examples/digits_mlp.yaml", backend="torch")  # doctest: +SKIP
        >>> result.metrics["val_accuracy"] > 0.95  # doctest: +SKIP
    """
    registry = get_registry()
    for broken in registry.broken:
        warnings.warn(
            f"crosstrain: plugin {broken.name!r} ({broken.entry_point or '-'}) was skipped: {broken.error}",
            stacklevel=2,
        )
    spec_obj, native = _split_target(target, spec)
    if spec_obj.trainer.fast_dev_run is not False:  # a smoke test: writes no files
        spec_obj, run_dir = dev_run_spec(spec_obj), False
    name = backend_name(spec_obj, backend)
    needs = callback_needs(spec_obj, callbacks)
    backend_obj = _checked_backend(registry, name, spec_obj, needs)
    checkpoint = find_checkpoint(spec_obj, resume) if resume is not None else None
    plan = plan_resume(spec_obj, checkpoint, resume_changed) if checkpoint else None
    rank = process_rank(spec_obj)
    if plan is not None and rank == 0:
        announce(plan)
    train, val = load_data(spec_obj, data, val_data)
    check_streams(spec_obj, train, val, val_data)
    length = run_length(spec_obj, train)  # the one run length: schedule and loop
    if plan is not None and plan.finished(spec_obj, length):
        return plan.finished_result(spec_obj)
    directory = run_directory(spec_obj, run_dir, checkpoint, rank)
    env = make_env(spec_obj, native, directory, name, length=length, needs=needs)
    program = backend_obj.build(spec_obj, env)
    if plan is not None:  # before the run directory is locked or written
        plan.check_model(program.get_state(), spec_obj)
    trainer = Trainer(spec_obj, program, registry, name, directory)
    trainer.versions = {
        "crosstrain": package_version("crosstrain") or "unknown",
        name.split(":")[0]: backend_obj.version(),
    }
    callback_spec = _quiet(spec_obj) if rank != 0 else spec_obj
    with locked_run_dir(directory), _Callbacks(registry, callback_spec, directory, list(callbacks)):
        if directory is not None:
            write_run_files(directory, spec_obj)
        result = trainer.fit(train, val, resume_from=checkpoint, length=length)
    result.spec, result.backend = spec_obj, name  # for result.evaluate()/predict() in memory
    return result


def _load_for_inference(
    target: Any, checkpoint: str | Path, backend: str | None, spec: Any
) -> tuple[Trainer, Path, int]:
    from .resume import check_fits_model, precision_changed
    from .state import read_checkpoint

    registry = get_registry()
    spec_obj, native = _split_target(target, spec)
    name = backend_name(spec_obj, backend)
    path = find_checkpoint(spec_obj, checkpoint)
    state, meta = read_checkpoint(path)
    program = _checked_backend(registry, name, spec_obj).build(
        spec_obj, make_env(spec_obj, native, None, name)
    )
    check_fits_model(state, program.get_state(), path, precision_changed(meta, spec_obj))
    try:
        program.set_state(state)
    except CrosstrainError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: cannot load into the {name} model: {err}") from err
    return Trainer(spec_obj, program, registry, name, None), path, state.step


@dataclass
class Evaluation:
    """What `evaluate_checkpoint` scored: the metrics, keyed `<split>_<name>`, the checkpoint
    (None for an in-memory program), its step, and which data (`split`, `described`)."""

    metrics: dict[str, float]
    split: str
    described: str
    checkpoint: Path | None = None
    step: int | None = None


def evaluation_data(spec: Spec, data: Any = None) -> tuple[Any, str, str]:
    """The data `evaluate` scores, its split name and a description for people.

    `data` given: all of it, split `test`. Else the spec's data: its validation split (`val`)
    when `data.validation_split` holds one out, else all of it — the data trained on (`train`).
    """
    from .batches import as_data
    from .resolve import check_finite

    if data is not None:
        given = check_finite(as_data(data, "data", spec), "data")
        return given, "test", f"the data given ({_rows(given)})"
    train, val = load_data(spec)
    source = spec.data.source
    if val is not None and len(val):
        part = f"{spec.data.validation_split:g} of {source}"
        return val, "val", f"the validation split ({part}, {_rows(val)})"
    return (
        train,
        "train",
        f"all of {source}, the training data: no validation split ({_rows(train)})",
    )


def _rows(data: Any) -> str:
    try:
        return f"{len(data):,} samples"
    except TypeError:
        return "a stream"


def evaluate_program(
    spec: Spec, program: Program, backend: str, data: Any = None
) -> tuple[dict[str, float], str, str]:
    """Scores a built program (`evaluation_data` picks the data); returns the metrics keyed
    `<split>_<name>`, the split and its description. `FitResult.evaluate` calls this."""
    trainer = Trainer(spec, program, get_registry(), backend, None)
    target_data, split, described = evaluation_data(spec, data)
    with _Callbacks(get_registry(), spec, None, []):
        return trainer.evaluate(target_data, stage=split), split, described


def predict_program(spec: Spec, program: Program, backend: str, x: Any = None) -> np.ndarray:
    """Outputs of a built program for inputs `x` (default every input of `spec.data`)."""
    trainer = Trainer(spec, program, get_registry(), backend, None)
    if x is None:
        train, val = load_data(spec)
        x = train.x if val is None else np.concatenate([train.x, val.x])
    return trainer.predict(as_inputs(x, "predict data", spec))


def evaluate_checkpoint(
    target: Any,
    checkpoint: str | Path,
    backend: str | None = None,
    data: Any = None,
    *,
    spec: Any = None,
) -> Evaluation:
    """`evaluate` with what was scored: the checkpoint path and step, the split and its data."""
    trainer, path, step = _load_for_inference(target, checkpoint, backend, spec)
    metrics, split, described = evaluate_program(
        trainer.spec, trainer.program, trainer.backend, data
    )
    return Evaluation(metrics, split, described, path, step)


def evaluate(
    target: Any,
    checkpoint: str | Path,
    backend: str | None = None,
    data: Any = None,
    *,
    spec: Any = None,
) -> dict[str, float]:
    """Loss and metrics of a checkpoint, keyed by the split scored (`evaluation_data`):
    `test_loss`, `test_accuracy` ... on `data`; without `data`, `val_...` on the validation
    split of `spec.data`, or `train_...` on all of it when it holds none out."""
    return evaluate_checkpoint(target, checkpoint, backend, data, spec=spec).metrics


def predict(
    target: Any,
    checkpoint: str | Path,
    x: Any = None,
    backend: str | None = None,
    *,
    spec: Any = None,
) -> np.ndarray:
    """Model outputs of a checkpoint for inputs `x`, in order: an array, or a loader/iterable
    whose batches are input arrays, `(x, ...)` tuples or dicts with an input key (a torch
    DataLoader, tf.data, grain...); default every input of `spec.data`."""
    trainer, _, _ = _load_for_inference(target, checkpoint, backend, spec)
    return predict_program(trainer.spec, trainer.program, trainer.backend, x)
