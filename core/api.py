"""The Python API: `fit`, `build`, `evaluate`, `predict`. The CLI calls exactly these."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.checkpoint.weights import without_given
from crosstrain.data.batches import check_streams
from crosstrain.data.windows import TokenWindows
from crosstrain.errors import CheckpointError, CrosstrainError
from crosstrain.plugin.protocol import Launcher, LaunchRequest, Program, RunEnv, callback_needs
from crosstrain.plugin.registry import Registry, get_registry, package_version
from crosstrain.spec.resolve import load_data
from crosstrain.spec.schema import Spec, load_spec
from crosstrain.train.callbacks import FitCallbacks
from crosstrain.train.explain import fit_plan
from crosstrain.train.inference import Evaluation, evaluate_program, predict_program
from crosstrain.train.remote_run import mirrored, open_remote, remote_result
from crosstrain.train.resume import announce, plan_resume
from crosstrain.train.run_length import RunLength, dev_run_spec, run_length
from crosstrain.train.rundir import (  # noqa: F401 (find_checkpoint, write_run_files: re-exported)
    find_checkpoint,
    locked_run_dir,
    run_directory,
    run_target,
    write_run_files,
    write_tokenizer,
)
from crosstrain.train.trainer import FitResult, Trainer
from crosstrain.train.workers import (  # noqa: F401 (DISTRIBUTED_WORKER_ENV: public here too)
    DISTRIBUTED_WORKER_ENV,
    launcher_environment,
    process_rank,
)

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
    from crosstrain.errors import BackendUnavailable

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


def explain(
    target: Any,
    backend: str | None = None,
    data: Any = None,
    val_data: Any = None,
    *,
    spec: Any = None,
    launcher: str | None = None,
) -> str:
    """The plan of `fit` with the same arguments, as text, without training or writing
    anything (what `crosstrain fit --explain` prints and every run's `summary.txt` starts
    with): backend, devices, processes, launcher, precision, compilation, sharding, run
    length, lr schedule, checkpoint policy and the hooks in the order they fire.

    Example:
        >>> print(explain("examples/digits_mlp.yaml", backend="jax"))  # doctest: +SKIP
    """
    import tempfile

    registry = get_registry()
    spec_obj, native = _split_target(target, spec)
    name = backend_name(spec_obj, backend)
    needs = callback_needs(spec_obj)
    backend_obj = _checked_backend(registry, name, spec_obj, needs)
    train, val = load_data(spec_obj, data, val_data)
    check_streams(spec_obj, train, val, val_data)
    length = run_length(spec_obj, train)
    env = make_env(spec_obj, native, None, name, length=length, needs=needs)
    backend_obj.check(spec_obj, env)
    scratch = tempfile.TemporaryDirectory()  # loggers are made as a fit makes them
    with scratch, FitCallbacks(registry, spec_obj, Path(scratch.name), []):
        return fit_plan(
            spec_obj, name, backend_obj, env, length, registry.pm,
            launcher=launcher, launched=launcher_environment(),
        )  # fmt: skip


def _quiet(spec: Spec) -> Spec:
    """The spec as a worker of rank > 0 runs it: no progress, no loggers. It writes no files (it
    has no run directory); its checkpoint callback only takes part in gathering a sharded state
    (`Trainer.save_checkpoint`)."""
    trainer = spec.trainer.model_copy(update={"progress": False, "loggers": []})
    return spec.model_copy(update={"trainer": trainer})


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
    launcher: str | None = None,
    launcher_options: dict[str, Any] | None = None,
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
        launcher: a registered launcher (`ray`) that runs the fit in `trainer.devices` worker
            processes it starts; None: this process trains (or the backend's own `launch`
            from the command line). Ignored inside a worker a launcher started.
        launcher_options: the launcher's settings (Ray: `address`, `max_failures`).

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
    # a URL among run_dir, trainer.run_dir and resume: a local staging copy of a remote run
    remote, checkpoint, staging = open_remote(spec_obj, run_dir, resume, process_rank(spec_obj))
    if resume is not None and staging is None:
        checkpoint = find_checkpoint(spec_obj, resume)
    plan = plan_resume(spec_obj, checkpoint, resume_changed) if checkpoint else None
    rank = process_rank(spec_obj)
    if plan is not None and rank == 0:
        announce(plan)
    if launcher is not None and launcher_environment() is None:
        if native is not None or callbacks:
            raise CrosstrainError(
                f"launcher {launcher!r} runs a spec in its workers: a native model or callback "
                "objects cannot be sent there (name callbacks in trainer.callbacks)"
            )
        if remote is not None or staging is not None:
            raise CrosstrainError(
                f"launcher {launcher!r}: the run directory must be a local path (on a filesystem "
                "every node reads); a remote run directory or checkpoint URL is not supported yet"
            )
        if run_dir is False or spec_obj.trainer.checkpoint is None:
            raise CrosstrainError(
                f"launcher {launcher!r} needs a run directory with checkpoints: a restarted "
                "worker resumes from rank 0's latest checkpoint, and the result is read from it"
            )
        request = LaunchRequest(
            name,
            spec_obj.trainer.devices,
            data,
            val_data,
            checkpoint,
            resume_changed,
            run_directory(spec_obj, run_dir, checkpoint, 0),
            dict(launcher_options or {}),
        )
        return _launcher(registry, launcher).fit(spec_obj, request)
    train, val = load_data(spec_obj, data, val_data)
    check_streams(spec_obj, train, val, val_data)
    length = run_length(spec_obj, train)  # the one run length: schedule and loop
    if plan is not None and plan.finished(spec_obj, length):
        return plan.finished_result(spec_obj)
    if remote is not None:
        directory = staging
    else:  # a remote checkpoint resumed into a new local run, or no URL at all
        directory = run_directory(spec_obj, run_dir, None if staging else checkpoint, rank)
    env = make_env(spec_obj, native, directory, name, length=length, needs=needs)
    # a resumed run starts from its checkpoint: model.weights / init_from are not read again
    program = backend_obj.build(without_given(spec_obj) if plan is not None else spec_obj, env)
    if plan is not None:  # before the run directory is locked or written
        plan.check_model(program.get_state(), spec_obj)
    trainer = Trainer(spec_obj, program, registry, name, directory, remote=remote)
    trainer.versions = {
        "crosstrain": package_version("crosstrain") or "unknown",
        name.split(":")[0]: backend_obj.version(),
    }
    if isinstance(train, TokenWindows):
        trainer.tokenizer = train.tokenizer
    callback_spec = _quiet(spec_obj) if rank != 0 else spec_obj
    with (
        mirrored(remote, staging),
        locked_run_dir(directory),
        FitCallbacks(registry, callback_spec, directory, list(callbacks)),
    ):
        if directory is not None:
            where = remote.url if remote is not None else directory
            plan_text = fit_plan(
                spec_obj, name, backend_obj, env, length, registry.pm,
                launched=launcher_environment(), checkpoints=f"{where}/checkpoints",
            )  # fmt: skip
            write_run_files(directory, spec_obj, plan_text)
            if trainer.tokenizer is not None:
                write_tokenizer(directory, trainer.tokenizer)
        result = trainer.fit(train, val, resume_from=checkpoint, length=length)
    result.spec, result.backend = spec_obj, name  # for result.evaluate()/predict() in memory
    return remote_result(result, remote)


def _launcher(registry: Registry, name: str) -> Launcher:
    """The registered launcher `name`, its library checked to be installed."""
    from crosstrain.errors import MissingDependency

    try:
        found = registry.launchers.get(name)
    except KeyError as err:
        raise CrosstrainError(f"--launcher: {err.args[0]}") from None
    available, reason = found.is_available()
    if not available:
        raise MissingDependency(f"launcher {name!r}", name, found.extra or name, reason)
    return found


def _load_for_inference(
    target: Any, checkpoint: str | Path, backend: str | None, spec: Any
) -> tuple[Trainer, Path, int]:
    trainer, path, step, _ = _load_checkpoint(target, checkpoint, backend, spec)
    return trainer, path, step


def _load_checkpoint(
    target: Any, checkpoint: str | Path, backend: str | None, spec: Any
) -> tuple[Trainer, Path, int, dict[str, Any]]:
    """A program built for the spec with the checkpoint's state: (trainer, path, step, meta)."""
    from crosstrain.checkpoint.format import read_checkpoint
    from crosstrain.train.resume import check_fits_model, precision_changed

    registry = get_registry()
    spec_obj, native = _split_target(target, spec)
    name = backend_name(spec_obj, backend)
    path = find_checkpoint(spec_obj, checkpoint)
    state, meta = read_checkpoint(path)
    program = _checked_backend(registry, name, spec_obj).build(
        without_given(spec_obj), make_env(spec_obj, native, None, name)
    )
    check_fits_model(state, program.get_state(), path, precision_changed(meta, spec_obj))
    try:
        program.set_state(state)
    except CrosstrainError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: cannot load into the {name} model: {err}") from err
    return Trainer(spec_obj, program, registry, name, None), path, state.step, meta


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
    checkpoint: str | Path | None,
    x: Any = None,
    backend: str | None = None,
    *,
    spec: Any = None,
) -> np.ndarray:
    """Model outputs of a checkpoint for inputs `x`, in order: an array, or a loader/iterable
    whose batches are input arrays, `(x, ...)` tuples or dicts with an input key (a torch
    DataLoader, tf.data, grain...); default every input of `spec.data`. A `checkpoint` of
    None predicts with the model as the spec builds it (`model.weights`, else the seed's
    initialisation), e.g. a `from_pretrained` spec."""
    if checkpoint is None:
        spec_obj, native = _split_target(target, spec)
        name = backend_name(spec_obj, backend)
        program = _checked_backend(get_registry(), name, spec_obj).build(
            spec_obj, make_env(spec_obj, native, None, name)
        )
        return predict_program(spec_obj, program, name, x)
    trainer, _, _ = _load_for_inference(target, checkpoint, backend, spec)
    return predict_program(trainer.spec, trainer.program, trainer.backend, x)


def generate(
    target: Any,
    checkpoint: str | Path | None = None,
    prompt: str = "\n",
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    backend: str | None = None,
    *,
    spec: Any = None,
) -> str:
    """Text from a language model's checkpoint: `prompt` and `max_new_tokens` tokens sampled
    after it (`crosstrain.train.generate`: seeded; `temperature` 0 is greedy, the same on every
    backend; `top_k` keeps the k likeliest). No key-value cache: each token recomputes the
    window, cropped to block_size. `target`: a spec or a run directory (its `spec.yaml`);
    `checkpoint`: step-N, a run directory or `latest` (default: the run given, else latest).

    Example:
        >>> generate("examples/char_gpt.yaml", "latest", prompt="The ", max_new_tokens=50)  # doctest: +SKIP
    """
    from crosstrain.train.generate import generate_text

    target, checkpoint = run_target(target, checkpoint)
    trainer, path, _, meta = _load_checkpoint(target, checkpoint, backend, spec)
    return generate_text(
        trainer.program, trainer.spec, meta, path, prompt, max_new_tokens, temperature, top_k, seed
    )


def lr_find(
    target: Any,
    backend: str | None = None,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    divergence: float = 4.0,
    spec: Any = None,
) -> Any:
    """The learning-rate range test (`crosstrain.train.lr_find`): a fit of at most `steps`
    steps, writing no files, whose lr grows from `min_lr` to `max_lr`; returns an
    `LrFindResult` with each step's lr and loss and the suggested lr (`.plot()` draws it)."""
    from crosstrain.train.lr_find import LossRecorder, range_test_spec, result_of

    spec_obj, native = _split_target(target, spec)
    name = backend_name(spec_obj, backend)
    recorder = LossRecorder(divergence, steps)
    range_spec = range_test_spec(spec_obj, min_lr, max_lr, steps)
    if native is None:
        fit(range_spec, backend=name, callbacks=[recorder], run_dir=False)
    else:
        fit(native, backend=name, spec=range_spec, callbacks=[recorder], run_dir=False)
    return result_of(recorder, name)
