"""`crosstrain fit` and `crosstrain config`: a spec file plus its overrides, trained or printed.

What a run uses, strongest first: a flag (`--accelerator`, `--backend` ...) or `--set`, then
the environment (`CROSSTRAIN_BACKEND`, `CROSSTRAIN_ACCELERATOR`), then the spec file (with
the files it `extends:`), then the defaults. `--print-config` (or `crosstrain config`) prints
that fully resolved spec as YAML, which `crosstrain fit` accepts as it is, and trains nothing.

Example:
    $ crosstrain fit examples/digits_mlp.yaml --set trainer.max_epochs=3 optimizer.lr=3e-4
    $ crosstrain fit examples/digits_mlp.yaml --backend jax --print-config
    $ crosstrain fit examples/digits_mlp.yaml --devices 2 --strategy fsdp --explain
    $ crosstrain fit examples/digits_mlp.yaml --run-dir file:///data/runs   # any fsspec URL
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crosstrain import api
from crosstrain.cli.curves import StepCurves, save_curves
from crosstrain.errors import CrosstrainError, SpecError, SpecIssue
from crosstrain.output import LOG
from crosstrain.plugin.command import Command
from crosstrain.plugin.registry import get_registry
from crosstrain.spec.compose import ENV_ACCELERATOR, ENV_BACKEND
from crosstrain.spec.schema import Spec, load_spec
from crosstrain.spec.summary import summary


def read_spec(path: str) -> Spec:
    """The validated spec in the file `path` (YAML or JSON), its `extends:` chain merged."""
    if not Path(path).is_file():
        raise SpecError(SpecIssue("", f"spec file not found: {path}"))
    return load_spec(Path(path))


def parse_sets(items: Sequence[str]) -> dict[str, str]:
    """`["trainer.max_epochs=3", ...]` → `{"trainer.max_epochs": "3"}` (values stay YAML text)."""
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(
                SpecIssue(item, "--set expects key=value, e.g. --set trainer.max_epochs=3")
            )
        try:
            _read_value(value)
        except SpecError as err:
            raise CrosstrainError(f"--set {item}: {err.issues[0].message}") from None
        changes[key.strip()] = value
    return changes


def _read_value(text: str) -> Any:
    """A `--set` value as YAML (what `Spec.override` reads), or SpecError saying why not."""
    from crosstrain.spec.schema import _read_text

    return _read_text(text, "--set")


def fit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The spec changes asked for by `fit`'s flags; dedicated flags win over `--set`."""
    changes: dict[str, Any] = parse_sets(args.set or [])
    flags = {
        "trainer.accelerator": args.accelerator,
        "trainer.devices": args.devices,
        "trainer.strategy": args.strategy,
        "trainer.precision": args.precision,
        "trainer.max_epochs": args.max_epochs,
        "trainer.run_dir": args.run_dir,
    }
    for key, value in flags.items():
        if value is not None:
            # a JSON string is a quoted YAML scalar: `--precision 32` stays the string "32"
            changes[key] = json.dumps(value) if isinstance(value, str) else value
    if args.no_progress or getattr(args, "verbosity", 0) < 0:  # -q: no progress either
        changes["trainer.progress"] = False
    if getattr(args, "logger", None):
        changes["trainer.loggers"] = list(args.logger)
    return changes


def resolved_spec(args: argparse.Namespace) -> tuple[Spec, str]:
    """The spec of `args.spec` after extends, environment and overrides, and the backend name
    (checked to be registered, so an unknown name fails before any output)."""
    spec = read_spec(args.spec)
    changes = fit_overrides(args)
    if changes:
        spec = spec.override(changes)
    backend = api.backend_name(spec, args.backend)
    try:
        get_registry().backend(backend)
    except CrosstrainError as err:
        if not args.backend and os.environ.get(ENV_BACKEND) == backend:
            raise CrosstrainError(f"{err} (from environment variable {ENV_BACKEND})") from None
        raise
    return spec, backend


def _origin(flag: Any, set_key: str, args: argparse.Namespace, env: str) -> str:
    if flag or any(item.partition("=")[0].strip() == set_key for item in args.set or []):
        return "command line"
    return f"${env}" if os.environ.get(env, "").strip() else "spec file or default"


def config_text(spec: Spec, backend: str, args: argparse.Namespace) -> str:
    """The resolved spec as YAML (with the backend filled in), headed by comments saying
    where the backend and accelerator came from."""
    import yaml

    data = spec.to_dict()
    data["backend"] = backend
    ordered = {key: data[key] for key in ("name", "seed", "backend") if key in data}
    ordered.update(data)
    accelerator = spec.trainer.accelerator
    note = " (the backend picks its best device)" if accelerator == "auto" else ""
    header = [
        f"# fully resolved spec of {args.spec}",
        f"# backend: {backend}  (from {_origin(args.backend, 'backend', args, ENV_BACKEND)})",
        f"# accelerator: {accelerator}{note}  "
        f"(from {_origin(args.accelerator, 'trainer.accelerator', args, ENV_ACCELERATOR)})",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(ordered, sort_keys=False)


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    """`title` and one aligned `key  value` line per metric."""
    print(title)
    width = max((len(k) for k in metrics), default=0)
    for key, value in metrics.items():
        print(f"  {key:<{width}}  {value:.6g}")


def cmd_config(args: argparse.Namespace) -> int:
    """Prints the fully resolved spec; trains nothing."""
    spec, backend = resolved_spec(args)
    sys.stdout.write(config_text(spec, backend, args))
    return 0


def starts_workers(backend: Any, spec: Spec) -> bool:
    """Whether `backend.launch` may start worker processes for this spec: several devices, no
    launcher around this process, and a backend with its own `launch`."""
    from crosstrain.plugin.protocol import Backend

    own_launch = getattr(type(backend), "launch", Backend.launch) is not Backend.launch
    return own_launch and spec.trainer.devices > 1 and api.launcher_environment() is None


def check_before_launch(spec: Spec, backend: str) -> None:
    """What every worker would check before its first step (capabilities, the backend's own
    check, the data: files, shapes, targets, non-finite values), done once in the launcher so
    that a refusal is printed once and no worker starts. Loads the data once more."""
    from crosstrain.data.batches import check_streams
    from crosstrain.plugin.protocol import callback_needs
    from crosstrain.spec.resolve import load_data

    backend_obj = api._checked_backend(get_registry(), backend, spec, callback_needs(spec))
    check = getattr(backend_obj, "check", None)
    if check is not None:
        check(spec, api.make_env(spec, backend=backend))
    train, val = load_data(spec)
    check_streams(spec, train, val, None)


def check_backend_first(spec: Spec, backend: str) -> None:
    """A missing framework, and an accelerator asked for by name (`--accelerator cuda`) that
    this machine lacks, are refused before the model table and "training ... on ..." are
    printed, not after them."""
    from crosstrain.output import native_stderr_silenced

    backend_obj = api._resolve_backend(get_registry(), backend)  # BackendUnavailable
    accelerator = spec.trainer.accelerator
    if accelerator in ("auto", "cpu"):
        return
    with native_stderr_silenced():
        found = backend_obj.accelerators_found()
    if accelerator not in found:
        raise CrosstrainError(
            f"accelerator {accelerator!r} not found by backend {backend!r} "
            f"(trainer.accelerator, --accelerator). Available: {', '.join(found)}"
        )


def warn_more_devices_than_cores(spec: Spec, backend_obj: Any) -> None:
    """One `warning:` line, in the process that starts the workers, when `--devices N` asks
    for more CPU workers than this machine has cores (they would time-share them)."""
    cores = os.cpu_count() or 1
    t = spec.trainer
    if t.devices <= cores or api.launcher_environment() is not None:
        return
    if t.accelerator == "auto":
        with contextlib.suppress(Exception):
            from crosstrain.output import native_stderr_silenced

            with native_stderr_silenced():
                if backend_obj.accelerators_found() != ["cpu"]:
                    return
    elif t.accelerator != "cpu":
        return
    LOG.warning(
        f"trainer.devices is {t.devices} on the CPU but this machine has {cores} cores: the "
        "workers share them (slower than fewer workers)"
    )


def launcher_choice(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """`--launcher NAME` and its options (`--ray-address`, `--max-failures`); (None, {}) when
    this process trains or the backend launches its own workers (torchrun for torch)."""
    launcher = getattr(args, "launcher", None)
    options: dict[str, Any] = {}
    if getattr(args, "ray_address", None) is not None:
        options["address"] = args.ray_address
    if getattr(args, "max_failures", None) is not None:
        options["max_failures"] = args.max_failures
    if launcher != "ray" and options:
        flags = " and ".join(f"--{k.replace('_', '-')}" for k in options)
        flags = flags.replace("--address", "--ray-address")
        raise CrosstrainError(f"{flags} needs --launcher ray")
    if launcher in (None, "torchrun") or api.launcher_environment() is not None:
        return None, {}
    return launcher, options


def cmd_fit(args: argparse.Namespace) -> int:
    """Trains the spec; prints the model table, epoch lines, final metrics and where files went."""
    if args.print_config:
        return cmd_config(args)
    spec, backend = resolved_spec(args)
    backend_obj = get_registry().backend(backend)
    launcher, launcher_options = launcher_choice(args)
    if args.explain:  # the plan, before any launcher or worker starts; nothing is written
        print(api.explain(spec, backend=backend, launcher=launcher), end="", flush=True)
        return 0
    warn_more_devices_than_cores(spec, backend_obj)
    if launcher is not None:
        check_before_launch(spec, backend)
    else:
        if starts_workers(backend_obj, spec):
            check_before_launch(spec, backend)
        status = backend_obj.launch(spec, args.argv, backend)
        if status is not None:
            return status
    if api.process_rank(spec) != 0:
        api.fit(spec, backend=args.backend, resume=args.resume, resume_changed=args.resume_changed)
        return 0
    check_backend_first(spec, backend)
    if spec.model is not None:
        LOG.info(summary(spec) + "\n")
    LOG.info(f'training "{spec.name}" on {backend}')
    LOG.debug(f"crosstrain {api.package_version('crosstrain')}, {backend} {backend_obj.version()}")
    for broken in get_registry().broken:
        LOG.warning(
            f"plugin {broken.name!r} ({broken.entry_point or '-'}) was skipped: {broken.error}"
        )
    curves = StepCurves()  # not sent to a launcher's workers: curves.png is per epoch there
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="crosstrain: plugin")
        result = api.fit(
            spec,
            backend=args.backend,
            resume=args.resume,
            resume_changed=args.resume_changed,
            launcher=launcher,
            launcher_options=launcher_options,
            callbacks=[] if launcher else [curves],
        )
    if result.extras.get("already_finished"):
        return 0  # said so; nothing trained, nothing written
    LOG.info("")
    if result.stopped_early:
        LOG.info(f"stopped early after epoch {len(result.history)}")
    print_metrics("final metrics:", result.metrics)
    if result.last_checkpoint is not None:
        LOG.info(f"last checkpoint: {result.last_checkpoint}")
    save_curves(result, curves.records)
    if result.run_dir is not None:
        LOG.info(f"run directory: {result.run_dir}")
    elif spec.trainer.fast_dev_run is not False:
        LOG.info("fast_dev_run: nothing written (no run directory, no checkpoint)")
    return 0


def configure_fit(parser: argparse.ArgumentParser, training: bool = True) -> None:
    """The arguments of `fit` (`training=False`: those of `config`, which only resolves)."""
    parser.add_argument("spec", help="spec file (YAML or JSON; may `extends:` other spec files)")
    parser.add_argument(
        "--backend",
        metavar="NAME",
        help=f"torch, jax, keras[:engine] or a plugin's (default: ${ENV_BACKEND}, the spec's, torch)",
    )
    parser.add_argument(
        "--accelerator",
        metavar="A",
        help=f"auto, cpu, cuda, mps or tpu (sets trainer.accelerator; default ${ENV_ACCELERATOR})",
    )
    parser.add_argument(
        "--devices", type=int, metavar="N", help="number of devices (sets trainer.devices)"
    )
    parser.add_argument(
        "--precision",
        metavar="P",
        help="32, 64, 16-mixed, bf16-mixed or bf16-true (sets trainer.precision)",
    )
    parser.add_argument(
        "--strategy",
        metavar="S",
        help="auto, ddp or fsdp (sets trainer.strategy; with --devices N, N processes through torchrun)",
    )
    parser.add_argument("--max-epochs", type=int, metavar="N", help="sets trainer.max_epochs")
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help="root of the run directories (sets trainer.run_dir; default runs)",
    )
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        help="override spec fields, e.g. --set trainer.max_epochs=3 optimizer.lr=3e-4 "
        "(repeatable; values are YAML; put the spec file before --set)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress display (sets trainer.progress=false)",
    )
    parser.add_argument(
        "--logger",
        action="append",
        metavar="NAME",
        help="csv, tensorboard, mlflow, wandb or a plugin's (repeatable; replaces trainer.loggers)",
    )
    if not training:
        return
    parser.add_argument(
        "--resume",
        metavar="latest|PATH",
        help="continue from the latest checkpoint of this spec, or a checkpoint/run directory "
        "(in that checkpoint's run directory)",
    )
    parser.add_argument(
        "--launcher",
        metavar="NAME",
        help="who starts the --devices N workers: the backend's own (torchrun for torch; the "
        "default) or ray (Ray Train on a local Ray or --ray-address; pip install 'crosstrain[ray]')",
    )
    parser.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="with --launcher ray: the Ray cluster to run on (default: a local Ray started here)",
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        metavar="N",
        help="with --launcher ray: restart the workers up to N times, from the latest checkpoint",
    )
    parser.add_argument(
        "--resume-changed",
        action="store_true",
        help="resume although the spec differs from the checkpoint's (seed, data, optimizer ...)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print the plan (backend, devices, processes, precision, sharding, run length, lr "
        "schedule, checkpoints, hooks in order) and exit without training or writing files",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved spec (extends, environment, overrides) as YAML and exit",
    )


def configure_config(parser: argparse.ArgumentParser) -> None:
    """The arguments of `config`: those of `fit` that resolve the spec."""
    configure_fit(parser, training=False)


COMMANDS = (
    Command("fit", "train a spec (--print-config: show it resolved)", configure_fit, cmd_fit),
    Command(
        "config", "print the fully resolved spec, as fit would run it", configure_config, cmd_config
    ),
)
