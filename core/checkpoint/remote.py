"""Checkpoints in a remote directory (any fsspec filesystem): the commit rule of the disk
format for filesystems whose rename may be a copy (object stores).

A checkpoint is uploaded into a temporary sibling `.tmp-step-<N>-<hex>/`, moved to `step-<N>/`
(a rename where the filesystem has one, a copy and delete on object stores) and committed by
writing `step-<N>/.committed` last. Readers require that marker: a directory without it
(half moved, half deleted) is never listed. A rewrite of step N first moves the old one to
`.replaced-step-<N>-<hex>/` (marker included), which still counts as step N until the new
one is committed; a deletion removes the marker first. Nothing here imports a framework.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from crosstrain.checkpoint.checks import TENSOR_FILES
from crosstrain.checkpoint.format import checkpoint_step
from crosstrain.errors import CheckpointError

COMMIT_MARKER = ".committed"
"""The file written last into a remote `step-<N>/`; readers list only directories that have it."""
CHECKPOINT_FILES = (*TENSOR_FILES, "trainer.json")
_STEP_DIR = re.compile(r"^step-(\d+)$")
_REPLACED_DIR = re.compile(r"^\.replaced-step-(\d+)-[0-9a-f]{32}$")
_TEMP_DIR = re.compile(r"^\.(tmp|old)-step-\d+-[0-9a-f]{32}$")


def _names(fs: Any, root: str) -> list[str]:
    if not fs.isdir(root):
        return []
    return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))


def _committed(fs: Any, path: str) -> bool:
    return bool(fs.exists(f"{path}/{COMMIT_MARKER}"))


def upload_checkpoint(fs: Any, local: Path, root: str) -> str:
    """Copies the local checkpoint directory `local` (`step-<N>/`) to `root/step-<N>` on `fs`
    with the commit rule above; returns the remote path.

    Raises:
        CheckpointError: the filesystem refused a write (names the remote path and the cause).
    """
    step = checkpoint_step(local)
    final = f"{root}/step-{step}"
    temp = f"{root}/.tmp-step-{step}-{uuid.uuid4().hex}"
    old = None
    try:
        fs.makedirs(temp, exist_ok=True)
        for name in CHECKPOINT_FILES:
            fs.put_file(str(Path(local) / name), f"{temp}/{name}")
        if fs.exists(final):
            old = f"{root}/.replaced-step-{step}-{uuid.uuid4().hex}"
            fs.mv(final, old, recursive=True)
        fs.mv(temp, final, recursive=True)
        fs.pipe_file(f"{final}/{COMMIT_MARKER}", f"step-{step}\n".encode())  # last: the commit
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot write checkpoint {fs.unstrip_protocol(final)}: {err}"
        ) from err
    if old is not None:
        remove_remote_checkpoint(fs, old)
    return final


def list_remote_checkpoints(fs: Any, root: str) -> list[str]:
    """Committed checkpoints under `root`, oldest step first (a replaced one counts as its
    step until its successor is committed)."""
    found: dict[int, str] = {}
    replaced: dict[int, str] = {}
    for name in _names(fs, root):
        path = f"{root}/{name}"
        if (m := _STEP_DIR.match(name)) and _committed(fs, path):
            found[int(m.group(1))] = path
        elif (m := _REPLACED_DIR.match(name)) and _committed(fs, path):
            replaced[int(m.group(1))] = path
    for step, path in replaced.items():
        found.setdefault(step, path)
    return [found[step] for step in sorted(found)]


def remove_remote_checkpoint(fs: Any, path: str) -> None:
    """Deletes a remote checkpoint: its marker first, so it is never listed half-deleted."""
    if fs.exists(f"{path}/{COMMIT_MARKER}"):
        fs.rm(f"{path}/{COMMIT_MARKER}")
    if fs.exists(path):
        fs.rm(path, recursive=True)


def clean_remote(fs: Any, root: str) -> None:
    """Removes what interrupted uploads left under `root`: temporaries, uncommitted `step-<N>`
    directories; a replaced checkpoint whose successor was never committed is moved back."""
    for name in _names(fs, root):
        path = f"{root}/{name}"
        if _TEMP_DIR.match(name) or (_STEP_DIR.match(name) and not _committed(fs, path)):
            fs.rm(path, recursive=True)
    for name in _names(fs, root):
        if (m := _REPLACED_DIR.match(name)) is not None:
            final = f"{root}/step-{m.group(1)}"
            if fs.exists(final):
                remove_remote_checkpoint(fs, f"{root}/{name}")
            else:
                fs.mv(f"{root}/{name}", final, recursive=True)


def download_checkpoint(fs: Any, path: str, local_root: Path) -> Path:
    """Copies committed remote checkpoint `path` to `local_root/step-<N>/` and returns that
    directory (read it with `read_checkpoint`, which checks every file).

    Raises:
        CheckpointError: not a committed checkpoint, or a file cannot be read.
    """
    where = fs.unstrip_protocol(path)
    if not _committed(fs, path):
        raise CheckpointError(f"{where}: not a committed checkpoint (no {COMMIT_MARKER})")
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    match = _STEP_DIR.match(name) or _REPLACED_DIR.match(name)
    if match is None:
        raise CheckpointError(f"{where}: not named like a checkpoint (step-<N>)")
    target = Path(local_root) / f"step-{match.group(1)}"
    target.mkdir(parents=True, exist_ok=True)
    try:
        for file in CHECKPOINT_FILES:
            fs.get_file(f"{path}/{file}", str(target / file))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{where}: cannot read {file}: {err}") from err
    return target
