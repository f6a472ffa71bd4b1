"""Ray as the cluster launcher: `crosstrain fit SPEC --launcher ray --devices N` and
`crosstrain.fit(spec, launcher="ray")` (`pip install 'crosstrain[ray]'`).

The fit runs in N Ray Train workers, on a local Ray started on demand or the cluster at
`address`. torch: `TorchTrainer` starts the workers, sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
`MASTER_ADDR` and joins them in a torch.distributed group (gloo on CPU, nccl on GPU). jax and
keras:jax: `JaxTrainer` starts them (and joins them itself on GPU/TPU); on CPU, where Ray
Train leaves JAX alone, rank 0 broadcasts a coordinator address (`broadcast_from_rank_zero`)
and every worker sets `JAX_COORDINATOR_ADDRESS` and the torchrun-style `RANK`/`WORLD_SIZE`
(what our own worker launcher sets), from which the backend calls `jax.distributed.initialize`
as under `--devices N`. Each worker calls `crosstrain.fit` with the same spec, so the loop, data
order, sharding and checkpoints are the ones of `--devices N` without Ray. Rank 0 writes the run directory, which
core makes before launching, so that every attempt writes the same one.

Failures: Ray restarts the whole worker group up to `max_failures` times (`FailureConfig`); each
attempt resumes from the latest checkpoint in that run directory (so the run directory must be
on storage every node reads: one machine, or a shared filesystem). The result is read back from
that directory: the workers save a last checkpoint at the end of the fit when the checkpoint
policy did not just save one.

This is the only module that imports Ray; core never does (tests/test_architecture.py).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from crosstrain.errors import (
    CrosstrainError,
    TrainingError,
    UnsupportedFeature,
    import_optional,
)
from crosstrain.plugin.hookspecs import hookimpl
from crosstrain.plugin.protocol import Launcher, LaunchRequest
from crosstrain.train.callbacks import Callback

SUPPORTED_BACKENDS = ("torch", "jax", "keras:jax")
"""Backends whose workers Ray Train starts (torch: `TorchTrainer`; jax, keras:jax: `JaxTrainer`)."""
JAX_BACKENDS = ("jax", "keras:jax")


class RayLauncher(Launcher):
    """`--launcher ray`: the fit in `trainer.devices` Ray Train workers."""

    name = "ray"
    extra = "ray"

    def is_available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("ray") is None:
            return False, "ray is not installed"
        return True, ""

    def fit(self, spec: Any, request: LaunchRequest) -> Any:
        if request.backend not in SUPPORTED_BACKENDS:
            raise UnsupportedFeature(
                request.backend, "launcher 'ray'", [f"--backend {b}" for b in SUPPORTED_BACKENDS]
            )
        options = dict(request.options or {})
        unknown = set(options) - {"address", "max_failures"}
        if unknown:
            raise CrosstrainError(
                f"launcher 'ray' options: unknown {sorted(unknown)} (known: address, max_failures)"
            )
        connect(options.get("address"), request.devices)
        assert request.run_dir is not None  # core makes it before launching
        run_dir = request.run_dir.resolve()  # workers run in Ray's own working directory
        config = {
            "spec": spec.to_dict(),
            "backend": request.backend,
            "data": request.data,
            "val_data": request.val_data,
            "resume": None if request.resume is None else str(request.resume.resolve()),
            "resume_changed": request.resume_changed,
            "run_dir": str(run_dir),
        }
        with tempfile.TemporaryDirectory(prefix="crosstrain-ray-") as storage:
            result = _trainer(config, request.devices, options, storage).fit()
        if result.error is not None:
            raise TrainingError(f"launcher 'ray': the workers failed: {_cause(result.error)}")
        return read_result(spec, run_dir)


def connect(address: str | None, devices: int) -> None:
    """Starts a local Ray (at least `devices` CPUs) or joins the cluster at `address`.

    Raises:
        CrosstrainError: `address` names no reachable Ray cluster.
    """
    ray = import_optional("ray", "launcher 'ray'", "ray")
    if ray.is_initialized():
        return
    quiet = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, throwaway cluster
    if address is None:
        ray.init(num_cpus=max(os.cpu_count() or 1, devices), **quiet)
        return
    _check_reachable(address)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise CrosstrainError(
            f"--ray-address {address}: cannot join a Ray cluster: {err}"
        ) from None


def _check_reachable(address: str) -> None:
    """A `host:port` address must accept a TCP connection within 5 s (Ray itself retries for
    about a minute before it gives up)."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise CrosstrainError(
            f"--ray-address {address!r}: expected HOST:PORT of a Ray head node (e.g. "
            "10.0.0.1:6379), ray://HOST:PORT or auto"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as err:
        raise CrosstrainError(
            f"--ray-address {address}: no Ray cluster answers there ({err.strerror or err})"
        ) from None


def _trainer(config: dict[str, Any], devices: int, options: dict[str, Any], storage: str) -> Any:
    import_optional("ray.train.torch", "launcher 'ray'", "ray")  # ray without its train extra
    from ray.train import FailureConfig, RunConfig, ScalingConfig

    if config["backend"] in JAX_BACKENDS:
        from ray.train.v2.jax import JaxTrainer as Trainer
    else:
        from ray.train.torch import TorchTrainer as Trainer

    accelerator = config["spec"]["trainer"].get("accelerator", "auto")
    return Trainer(
        train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=devices, use_gpu=accelerator == "cuda"),
        run_config=RunConfig(
            storage_path=storage,
            name="crosstrain",
            failure_config=FailureConfig(max_failures=int(options.get("max_failures") or 0)),
        ),
    )


def _cause(error: BaseException) -> str:
    """The innermost message of a Ray error (a worker's CrosstrainError says it best)."""
    seen = error
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return text[-1] if text else type(seen).__name__


class SaveAtEnd(Callback):
    """Saves a last checkpoint when the fit ends after steps the checkpoint policy did not save
    (every rank decides alike from the history, so a sharded state is gathered by all)."""

    def __init__(self, every_n_epochs: int):
        self.every_n_epochs = every_n_epochs

    def on_fit_end(self, trainer: Any) -> None:  # noqa: D102
        last = trainer.history[-1] if trainer.history else None
        saved = (
            last is not None
            and last.get("step") == trainer.global_step
            and (int(last["epoch"]) + 1) % self.every_n_epochs == 0
        )
        if not saved and trainer.global_step > 0:
            trainer.save_checkpoint()


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: `crosstrain.fit` on the spec, resuming from the run directory's
    latest checkpoint when an earlier attempt left one."""
    from crosstrain.api import fit
    from crosstrain.checkpoint.format import latest_checkpoint
    from crosstrain.spec.schema import load_spec

    spec = load_spec(config["spec"])
    if config["backend"] in JAX_BACKENDS:
        join_jax_processes()
    run_dir = Path(config["run_dir"])
    latest = latest_checkpoint(run_dir / "checkpoints")
    resume = latest if latest is not None else config["resume"]
    fit(
        spec,
        backend=config["backend"],
        data=config["data"],
        val_data=config["val_data"],
        resume=resume,
        resume_changed=config["resume_changed"],
        run_dir=run_dir,
        callbacks=[SaveAtEnd(spec.trainer.checkpoint.every_n_epochs)],
    )


def join_jax_processes() -> None:
    """Sets what the jax backend reads to call `jax.distributed.initialize`, as our own worker
    launcher does (`launch_workers`): the torchrun-style rank variables and a coordinator on
    rank 0's node at a free port, broadcast from rank 0 to every worker of the group."""
    import ray
    from crosstrain.train.workers import free_port
    from ray.train.collective import broadcast_from_rank_zero

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    mine = f"{ray.util.get_node_ip_address()}:{free_port()}" if rank == 0 else None
    os.environ.update(
        {
            "JAX_COORDINATOR_ADDRESS": broadcast_from_rank_zero(mine),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(context.get_local_rank()),
        }
    )


def read_result(spec: Any, run_dir: Path) -> Any:
    """The FitResult of the workers' run, from the last checkpoint rank 0 wrote in `run_dir`."""
    from crosstrain.checkpoint.format import latest_checkpoint, read_checkpoint
    from crosstrain.train.result import FitResult

    last = latest_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise TrainingError(
            f"launcher 'ray': the workers finished without a checkpoint in {run_dir}"
        )
    state, meta = read_checkpoint(last)
    history = [dict(h) for h in meta.get("history", [])]
    metrics = {
        k: v for k, v in (history[-1] if history else {}).items() if k not in ("epoch", "step")
    }
    t = spec.trainer
    ended = int(meta.get("epoch", 0)) >= t.max_epochs or (
        t.max_steps is not None and int(meta.get("global_step", 0)) >= t.max_steps
    )
    return FitResult(
        metrics=metrics,
        history=history,
        state=state,
        native_model=None,
        program=None,
        run_dir=run_dir,
        last_checkpoint=last,
        stopped_early=not ended,
        extras={"launcher": "ray"},
    )


@hookimpl
def crosstrain_add_launchers(registry: Any) -> None:
    registry.launchers.add("ray", RayLauncher())
