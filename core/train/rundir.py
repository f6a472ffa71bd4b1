"""Run directories: which one a fit writes to, created without races, and held by one fit.

A new run is `<trainer.run_dir>/<name>/<YYYYmmdd-HHMMSS>[-k]/`, made with a plain `mkdir` (no
`exist_ok`), so two fits started in the same second get two directories. A resumed run goes on
in the run directory of its checkpoint (`runs/<name>/<time>/checkpoints/step-<N>`). For the
whole fit, rank 0 holds an exclusive `fcntl.flock` on `<run dir>/.crosstrain.lock` (the file
holds its pid); a second fit on the same directory is refused with a CrosstrainError.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crosstrain.checkpoint.checks import check_meta, strict_json
from crosstrain.checkpoint.format import checkpoint_step, created_time, list_checkpoints
from crosstrain.errors import CheckpointError, CrosstrainError

LOCK_FILE = ".crosstrain.lock"
_MAX_SUFFIX = 1000


def new_run_dir(spec: Any) -> Path:
    """Creates and returns `<trainer.run_dir>/<name>/<YYYYmmdd-HHMMSS>[-k]/` (empty).

    Raises:
        CrosstrainError: the directory cannot be created (names the path and the cause).
    """
    parent = Path(spec.trainer.run_dir) / spec.name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for k in range(_MAX_SUFFIX):
            path = parent / (stamp if k == 0 else f"{stamp}-{k}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return path
    except OSError as err:
        raise CrosstrainError(
            f"cannot create a run directory under {parent}: {err.strerror or err}"
        ) from None
    raise CrosstrainError(f"cannot create a run directory under {parent}: {stamp}-* all taken")


def checkpoint_run_dir(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint belongs to (`<run>/checkpoints/step-<N>` with
    `<run>/spec.yaml`), or None for a checkpoint kept anywhere else."""
    checkpoints = Path(checkpoint).parent
    if checkpoints.name == "checkpoints" and (checkpoints.parent / "spec.yaml").is_file():
        return checkpoints.parent
    return None


def run_directory(
    spec: Any, run_dir: Path | str | bool | None, checkpoint: Path | None, rank: int
) -> Path | None:
    """Where a fit writes: None on ranks > 0 and with `run_dir=False`; the given directory
    (created); else the checkpoint's run directory when resuming one; else a new one."""
    if rank != 0 or run_dir is False:
        return None
    if run_dir is None or run_dir is True:
        found = checkpoint_run_dir(checkpoint) if checkpoint is not None else None
        return found if found is not None else new_run_dir(spec)
    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextmanager
def locked_run_dir(path: Path | None) -> Iterator[None]:
    """Holds an exclusive lock on run directory `path` (nothing for None, or where `fcntl` is
    missing); released when the block ends, or by the OS when the process dies.

    Raises:
        CrosstrainError: another process holds it: `run directory <path> is in use by another
            crosstrain process (pid N)`.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise CrosstrainError(
            f"cannot use run directory {path}: {err.strerror or err} "
            f"({Path(path) / LOCK_FILE}); a fit writes its lock, checkpoints and metrics there"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise CrosstrainError(
                f"run directory {path} is in use by another crosstrain process (pid {pid})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def write_run_files(path: Path, spec: Any, plan: str = "") -> None:
    """The resolved spec (`spec.yaml`) and `summary.txt`: the fit's plan (`explain`) and the
    model table."""
    from crosstrain.spec.summary import model_summary_text

    (path / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    table = model_summary_text(spec)
    text = plan + ("\n" if plan and table is not None else "") + (table + "\n" if table else "")
    if text:
        (path / "summary.txt").write_text(text, encoding="utf-8")


TOKENIZER_FILE = "tokenizer.json"
"""The tokenizer record of a run on text data (`crosstrain.data.tokenizers`), beside spec.yaml."""


def write_tokenizer(path: Path, record: dict[str, Any]) -> None:
    """`<run>/tokenizer.json`: the record generation decodes with."""
    (path / TOKENIZER_FILE).write_text(json.dumps(record), encoding="utf-8")


def read_tokenizer(run_dir: Path | None) -> dict[str, Any] | None:
    """The run directory's tokenizer record, or None where it has none."""
    if run_dir is None or not (Path(run_dir) / TOKENIZER_FILE).is_file():
        return None
    try:
        return json.loads((Path(run_dir) / TOKENIZER_FILE).read_text(encoding="utf-8"))
    except ValueError as err:
        raise CrosstrainError(f"{Path(run_dir) / TOKENIZER_FILE}: not JSON ({err})") from None


def _written_order(path: Path) -> tuple[float, int, float] | None:
    """How new a checkpoint is: (its record's `created` time, step, trainer.json's mtime), or
    None (with a warning) when its trainer.json cannot be read or fails its checks."""
    meta_path = path / "trainer.json"
    try:
        meta = strict_json(meta_path.read_bytes())
        check_meta(meta, meta_path, checkpoint_step(path))
        created = created_time(meta)
        mtime = meta_path.stat().st_mtime
    except (OSError, ValueError, RecursionError, CheckpointError) as err:
        reason = str(err) if isinstance(err, CheckpointError) else f"{meta_path}: {err}"
        print(f"warning: skipping unreadable checkpoint: {reason}", file=sys.stderr)
        return None
    return (created if created is not None else mtime, checkpoint_step(path), mtime)


def newest_checkpoint(candidates: list[Path]) -> Path | None:
    """The checkpoint written last (by the `created` time in its trainer.json, then step), or
    None; a candidate whose trainer.json is unreadable or invalid is skipped with a warning."""
    ordered = [(key, path) for path in candidates if (key := _written_order(path)) is not None]
    return max(ordered, key=lambda item: item[0])[1] if ordered else None


def run_target(target: Any, checkpoint: str | Path | None) -> tuple[Any, str | Path]:
    """`(spec, checkpoint)` of an inference call: a run directory as `target` stands for its
    `spec.yaml` and, when no checkpoint is named, its latest checkpoint."""
    if isinstance(target, (str, Path)) and (Path(target) / "spec.yaml").is_file():
        return Path(target) / "spec.yaml", Path(target) if checkpoint is None else checkpoint
    return target, "latest" if checkpoint is None else checkpoint


def find_checkpoint(spec: Any, resume: str | Path) -> Path:
    """A checkpoint directory from `latest` (the newest checkpoint of the spec's runs under
    `trainer.run_dir/<name>/`), a checkpoint dir, a checkpoints dir or a run dir (its newest)."""
    if str(resume) == "latest":
        runs = Path(spec.trainer.run_dir) / spec.name
        found = [c for run in sorted(runs.glob("*")) for c in list_checkpoints(run / "checkpoints")]
        newest = newest_checkpoint(found)
        if newest is None:
            raise CheckpointError(
                f"latest: no {'readable ' if found else ''}checkpoint under "
                f"{runs}/*/checkpoints (trainer.run_dir, --run-dir)"
            )
        return newest
    path = Path(resume)
    if (path / "trainer.json").is_file():
        return path
    for candidate in (path, path / "checkpoints"):
        found = list_checkpoints(candidate)
        newest = newest_checkpoint(found)
        if newest is not None:
            return newest
        if found:
            raise CheckpointError(f"{candidate}: no readable checkpoint (see the warnings)")
    raise CheckpointError(
        f"{path}: not a checkpoint (no trainer.json) and no step-<N>/ checkpoint inside"
    )
