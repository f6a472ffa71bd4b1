"""Worker processes on this machine for a backend without a launcher of its own (jax: `crosstrain
fit SPEC --backend jax --devices 2`), and the error collection every launcher shares.

Each worker runs `python -m crosstrain.cli <argv>` with `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
`MASTER_ADDR` and `MASTER_PORT` (torchrun's names, which `launcher_environment`
reads, so rank 0 writes the run directory) plus the backend's own variables. A worker's
deliberate error goes to a file (`WORKER_ERROR_DIR_ENV`) and is printed once by the launcher.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from crosstrain.errors import WORKER_ERROR_DIR_ENV

if TYPE_CHECKING:
    from crosstrain.spec.schema import Spec

DISTRIBUTED_WORKER_ENV = "CROSSTRAIN_DISTRIBUTED_WORKER"
"""Set by a backend in a process that joined a multi-process group; the command line then ends
the process without interpreter finalization (`crosstrain.end_worker`)."""


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


GRACE_SECONDS = 30.0
"""How long the other workers may take to stop (interrupt checkpoint) after one failed."""


def free_port() -> int:
    """A TCP port nobody listens on now (the coordinator's)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def terminate_with_parent() -> None:
    """In a forked worker, before exec: ask Linux for SIGTERM when the launcher dies, so the
    workers still save an interrupt checkpoint and stop after a SIGKILL of the launcher."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def worker_errors(directory: Path) -> list[str]:
    """The distinct error messages the workers left in `directory`, in rank order."""
    found: list[str] = []
    files = sorted(directory.glob("rank-*.txt"), key=lambda p: int(p.stem.split("-")[1]))
    for path in files:
        message = path.read_text(encoding="utf-8", errors="replace").strip()
        if message and message not in found:
            found.append(message)
    return found


def launch_workers(devices: int, argv: Sequence[str], env: dict[str, str]) -> int:
    """Runs `crosstrain <argv>` in `devices` processes on this machine; their exit status
    (`supervise`).

    Args:
        devices: how many processes (one per device).
        argv: the command line after `crosstrain`.
        env: the backend's variables, the same for every worker.
    """
    shared = {
        "WORLD_SIZE": str(devices),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    command = [sys.executable, "-m", "crosstrain.cli", *argv]
    ranked = []
    for rank in range(devices):
        ranked.append((command, {**shared, **env, "RANK": str(rank), "LOCAL_RANK": str(rank)}))
    return supervise(ranked)


def supervise(commands: Sequence[tuple[Sequence[str], dict[str, str]]]) -> int:
    """Runs each `(command, extra environment)` as a worker or a launcher of workers (torchrun)
    until all end; their exit status.

    Each process gets its own session, so a terminal's Ctrl-C reaches this process only, which
    forwards SIGINT/SIGTERM to every process once (a second signal would abort a step without
    the interrupt checkpoint). When one fails, the others get SIGTERM and `GRACE_SECONDS` to
    stop. The workers' deliberate errors (`WORKER_ERROR_DIR_ENV`) are printed once each.
    Returns 0, 128 + the signal's number after a signal, or the first failure's status.
    """
    errors = tempfile.TemporaryDirectory(prefix="crosstrain-errors-")
    workers = [
        subprocess.Popen(
            list(command),
            start_new_session=True,
            preexec_fn=terminate_with_parent if sys.platform == "linux" else None,
            env={**os.environ, **extra, WORKER_ERROR_DIR_ENV: errors.name},
        )
        for command, extra in commands
    ]
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if not received:
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signum)
        received.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, forward) for signum in handled}
    try:
        failed = _wait(workers)
        if received:
            return 128 + received[0]
        for message in worker_errors(Path(errors.name)):
            print(f"error: {message}", file=sys.stderr)
        return failed
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        errors.cleanup()


def _wait(workers: list[subprocess.Popen[bytes]]) -> int:
    """Waits for every worker; after the first failure the rest get SIGTERM, then SIGKILL once
    `GRACE_SECONDS` passed. The first failure's status, or 0."""
    failed, deadline = 0, None
    while any(w.poll() is None for w in workers):
        for worker in workers:
            status = worker.poll()
            if status not in (None, 0) and not failed:
                failed = status if 0 < status < 256 else 1
                if status < 0:  # a signal: the worker could not say why itself
                    print(killed_line(workers.index(worker), worker.pid, -status), file=sys.stderr)
                deadline = time.monotonic() + GRACE_SECONDS
                for other in workers:
                    if other.poll() is None:
                        other.terminate()
        if deadline is not None and time.monotonic() > deadline:
            for worker in workers:
                worker.kill()
        time.sleep(0.05)
    if failed:
        return failed
    status = next((w.returncode for w in workers if w.returncode), 0)  # all ended at once
    return status if 0 <= status < 256 else 1


def killed_line(rank: int, pid: int, signum: int) -> str:
    """The launcher's one line for a worker a signal ended (SIGKILL, the OOM killer, ...)."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return (
        f"error: worker {rank} (pid {pid}) was killed by {name}; the other workers were "
        "stopped (resume from the last checkpoint with --resume latest)"
    )


def end_worker(status: int = 0) -> NoReturn:
    """Ends a process that was one rank of a multi-process run: the atexit handlers run while
    the interpreter is whole (the torch backend leaves its process group there, after a
    barrier), output is flushed, and the process ends without interpreter finalization.

    torch 2.13's gloo can abort a finished rank while C++ objects are torn down at exit
    ("terminate called without an active exception", SIGABRT): 9 of 30 two-process runs of a
    plain torch DDP script on this project's 2-core machine under load, so torchrun reports a
    failed run whose checkpoints are written. The command line ends every worker this way; a
    script of your own started by torchrun should end with `crosstrain.end_worker()` too.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
