"""Run directories at an fsspec URL (`s3://`, `gs://`, `memory://`, `file://` ...).

A fit whose run directory is a URL runs in a local staging directory (so every logger,
plugin and the lock work on plain files, and MLflow's SQLite store stays possible) and the
`RemoteRun` mirrors it: each checkpoint is uploaded as soon as it is written (with the
commit rule of `crosstrain.checkpoint.remote`), the other files (`spec.yaml`, `summary.txt`,
`metrics.csv`, TensorBoard events ...) after each checkpoint and when the fit ends, each
through a temporary name and a move. The staging directory is removed at the end. A resume
from a URL downloads the checkpoint (and the run's `spec.yaml`/`metrics.csv`) into the
staging directory and goes on in the checkpoint's remote run directory.

Remote run directories are not locked: `fcntl` locks work on local disk only and object
stores have no lock; two fits resuming one remote run at once are not detected (a new run
still gets a fresh `<time>[-k]` name).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crosstrain.checkpoint.remote import (
    clean_remote,
    download_checkpoint,
    list_remote_checkpoints,
    remove_remote_checkpoint,
    upload_checkpoint,
)
from crosstrain.errors import CheckpointError, CrosstrainError, MissingDependency

_SKIPPED = {"checkpoints", ".crosstrain.lock"}
_RUN_FILES = ("spec.yaml", "metrics.csv")
"""What a remote resume copies besides the checkpoint: the run's spec and its metric rows."""


def is_url(value: Any) -> bool:
    """Whether a run directory or resume argument is a URL (`scheme://...`), not a path."""
    return isinstance(value, str) and "://" in value


def filesystem(url: str, where: str) -> tuple[Any, str]:
    """The fsspec filesystem and the path inside it for `url`.

    Raises:
        MissingDependency: fsspec itself, or the scheme's implementation (s3fs, gcsfs ...),
            is not installed.
        CrosstrainError: the scheme is unknown to fsspec (names `where` and the URL).
    """
    try:
        import fsspec.core
    except ImportError as err:
        raise MissingDependency(f"{where} {url!r}", "fsspec", "remote", str(err)) from None
    scheme = url.split("://", 1)[0]
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as err:
        raise CrosstrainError(
            f"{where} {url!r}: the filesystem for {scheme}:// is not installed ({err})"
        ) from None
    except ValueError as err:
        known = "file, memory, s3, gs, az, hdfs, ... (fsspec's protocols)"
        raise CrosstrainError(
            f"{where} {url!r}: unknown URL scheme {scheme!r} ({err}; known: {known})"
        ) from None
    return fs, str(path).rstrip("/")


class RemoteRun:
    """A remote run directory `url` and the local staging directory that mirrors it."""

    def __init__(self, fs: Any, path: str, staging: Path):
        self.fs, self.path, self.staging = fs, path, staging
        self.url = fs.unstrip_protocol(path)
        self._uploaded: set[str] = set()
        """Remote checkpoints staged by this fit (committed, or resumed from): retention
        deletes only these, when the local copy was deleted; older ones stay."""
        self._sent: dict[str, tuple[int, int]] = {}

    @property
    def checkpoints(self) -> str:
        return f"{self.path}/checkpoints"

    def start(self) -> None:
        """Creates the remote directory and clears leftovers of interrupted uploads."""
        try:
            self.fs.makedirs(self.path, exist_ok=True)
            clean_remote(self.fs, self.checkpoints)
        except OSError as err:
            raise CrosstrainError(f"cannot use run directory {self.url}: {err}") from None

    def commit_checkpoint(self, local: Path) -> str:
        """Uploads local checkpoint `local`, mirrors retention and the run's other files;
        returns the checkpoint's URL. Runs on the writer thread under async saves."""
        remote = upload_checkpoint(self.fs, Path(local), self.checkpoints)
        self._uploaded.add(remote)
        self._mirror_retention()
        self.sync_files()
        return self.fs.unstrip_protocol(remote)

    def url_of(self, local: Path | None) -> str | None:
        """The remote URL of a local path inside the staging directory."""
        if local is None:
            return None
        relative = Path(local).relative_to(self.staging).as_posix()
        return self.fs.unstrip_protocol(f"{self.path}/{relative}")

    def _mirror_retention(self) -> None:
        local_dir = self.staging / "checkpoints"
        for remote in sorted(self._uploaded):
            if not (local_dir / remote.rsplit("/", 1)[-1]).is_dir():
                remove_remote_checkpoint(self.fs, remote)
                self._uploaded.discard(remote)

    def sync_files(self) -> None:
        """Uploads every staged file (checkpoints aside) that changed since its last upload,
        each to a temporary name first and then moved into place."""
        for local in sorted(self.staging.rglob("*")):
            relative = local.relative_to(self.staging)
            if relative.parts[0] in _SKIPPED or not local.is_file():
                continue
            stat = local.stat()
            key = relative.as_posix()
            if self._sent.get(key) == (stat.st_size, stat.st_mtime_ns):
                continue
            target = f"{self.path}/{key}"
            parent = target.rsplit("/", 1)[0]
            temp = f"{parent}/.{local.name}.{uuid.uuid4().hex}.tmp"
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.put_file(str(local), temp)
            self.fs.mv(temp, target)
            self._sent[key] = (stat.st_size, stat.st_mtime_ns)

    def put_file(self, local: Path, name: str) -> str:
        """Uploads one more file (e.g. `curves.png` written after the fit); returns its URL."""
        target = f"{self.path}/{name}"
        temp = f"{self.path}/.{name}.{uuid.uuid4().hex}.tmp"
        self.fs.put_file(str(local), temp)
        self.fs.mv(temp, target)
        return self.fs.unstrip_protocol(target)

    def close(self) -> None:
        """Final mirror (retention, files) and removal of the staging directory."""
        try:
            self._mirror_retention()
            self.sync_files()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)


def _staging() -> Path:
    """A new local staging directory, removed at exit at the latest (a fit that fails before
    its loop starts, or ends with nothing to train, leaves no copy behind)."""
    path = Path(tempfile.mkdtemp(prefix="crosstrain-run-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _new_run(fs: Any, root: str, name: str) -> str:
    """A fresh `<root>/<name>/<time>[-k]` path (checked with `exists`, not race-free)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = f"{root}/{name}/{stamp if k == 0 else f'{stamp}-{k}'}"
        if not fs.exists(path):
            return path
    raise CrosstrainError(f"cannot create a run directory under {root}/{name}: {stamp}-* all taken")


def _find_remote_checkpoint(spec: Any, resume: str) -> tuple[Any, str]:
    """(filesystem, path) of the checkpoint `resume` names: `latest` under a remote
    `trainer.run_dir`, a checkpoint, a `checkpoints` directory or a run directory URL."""
    if resume == "latest":
        fs, root = filesystem(spec.trainer.run_dir, "trainer.run_dir")
        runs = f"{root}/{spec.name}"
        found = []
        if fs.isdir(runs):
            for run in sorted(fs.ls(runs, detail=False)):
                found += list_remote_checkpoints(fs, f"{str(run).rstrip('/')}/checkpoints")
        if not found:
            where = fs.unstrip_protocol(runs)
            raise CheckpointError(
                f"--resume latest: no committed checkpoint under {where}/*/checkpoints"
            )
        step = lambda p: int(p.rsplit("-", 1)[-1]) if "/step-" in p else -1  # noqa: E731
        return fs, max(found, key=step)
    fs, path = filesystem(resume, "--resume")
    if fs.exists(f"{path}/trainer.json"):
        return fs, path
    for candidate in (path, f"{path}/checkpoints"):
        found = list_remote_checkpoints(fs, candidate)
        if found:
            return fs, found[-1]
    raise CheckpointError(
        f"{resume}: not a checkpoint and no committed step-<N>/ checkpoint inside"
    )


def open_remote(
    spec: Any, run_dir: Any, resume: Any, rank: int
) -> tuple[RemoteRun | None, Path | None, Path | None]:
    """For a fit that involves a URL (`run_dir`, `trainer.run_dir` or `resume`):
    `(remote run or None, local copy of the checkpoint to resume or None, the local staging
    directory)`; the caller removes the staging directory when the fit ends (`RemoteRun.close`
    does). Returns `(None, None, None)` when nothing is remote: the caller goes the local way.
    Ranks > 0 and `run_dir=False` get no remote run; neither does a resume from a remote
    checkpoint outside a run directory with a local `trainer.run_dir` (a new local run)."""
    resume_url = resume is not None and (
        is_url(str(resume)) or (str(resume) == "latest" and is_url(spec.trainer.run_dir))
    )
    explicit = is_url(str(run_dir)) if isinstance(run_dir, (str, Path)) else False
    root_remote = run_dir is None and is_url(spec.trainer.run_dir)
    if not (resume_url or explicit or (root_remote and resume is None)):
        return None, None, None
    staging = _staging()
    checkpoint, run = None, None
    try:
        if resume_url:
            fs, path = _find_remote_checkpoint(spec, str(resume))
            parent = path.rsplit("/", 1)[0]
            run_path = parent.rsplit("/", 1)[0]
            in_run = parent.endswith("/checkpoints") and fs.exists(f"{run_path}/spec.yaml")
            checkpoint = download_checkpoint(fs, path, staging / "checkpoints")
            if in_run and rank == 0 and run_dir is not False and not explicit:
                for name in _RUN_FILES:
                    if fs.exists(f"{run_path}/{name}"):
                        fs.get_file(f"{run_path}/{name}", str(staging / name))
                run = RemoteRun(fs, run_path, staging)
                run._uploaded.add(path)  # staged as a local checkpoint: retention decides
        if rank == 0 and run_dir is not False and run is None:
            if explicit:
                fs, path = filesystem(str(run_dir), "run_dir")
                run = RemoteRun(fs, path, staging)
            elif is_url(spec.trainer.run_dir):
                fs, root = filesystem(spec.trainer.run_dir, "trainer.run_dir")
                run = RemoteRun(fs, _new_run(fs, root, spec.name), staging)
        if run is not None:
            run.start()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run, checkpoint, staging


@contextmanager
def mirrored(remote: RemoteRun | None, staging: Path | None) -> Iterator[None]:
    """Around a fit: the final mirror of a remote run when it ends (also on an error), and
    the staging directory removed."""
    try:
        yield
    finally:
        if remote is not None:
            remote.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def remote_result(result: Any, remote: RemoteRun | None) -> Any:
    """A FitResult whose `run_dir`/`last_checkpoint` are the remote run's URLs (strings)."""
    if remote is not None:
        result.last_checkpoint = remote.url_of(result.last_checkpoint)
        result.run_dir = remote.url
    return result


def upload_file(run_url: str, local: Path, name: str) -> str:
    """Puts one file into a remote run directory after the fit (e.g. `curves.png`)."""
    fs, path = filesystem(run_url, "run directory")
    return RemoteRun(fs, path, Path(local).parent).put_file(Path(local), name)
