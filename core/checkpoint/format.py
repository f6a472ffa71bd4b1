"""Canonical state and the checkpoint format: `step-<N>/` with two safetensors files and JSON.

Written into a temporary sibling, fsynced, then renamed, so a crash leaves the previous
checkpoint whole; nothing is ever unpickled, and a file that is not ours fails with a
CheckpointError that names the file and the problem. A tensor file's header is checked
against the file's size before anything is allocated.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.checkpoint.checks import (
    DIGEST_KEY,
    FORMAT,
    FORMAT_VERSION,
    TENSOR_FILES,
    check_finite,
    check_meta,
    check_tensor_file,  # noqa: F401  (re-exported: backends read tensor files through format)
    decode_array,
    record_digest,
    strict_json,
)
from crosstrain.checkpoint.stream import read_tensor_file, write_tensor_file
from crosstrain.errors import CheckpointError

_STEP_DIR = re.compile(r"^step-(\d+)$")
_TEMP_DIR = re.compile(r"^\.(tmp|old)-step-\d+-[0-9a-f]{32}$")
_REPLACED_DIR = re.compile(r"^\.replaced-step-(\d+)-[0-9a-f]{32}$")
_MAX_JSON = 256 << 20


@dataclass
class CanonicalState:
    """A backend's whole training state in the layout every backend shares.

    Attributes:
        params: `<layer>/<param>` → array, trainable and not (BatchNorm moving statistics).
        optimizer: `<slot>/<layer>/<param>` → array (slots of `crosstrain.nn.optim`).
        step: optimizer updates done.
        rng: backend-specific random state (`torch`, `jax` ...) → uint8/uint32 array.
    """

    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    step: int = 0
    rng: dict[str, np.ndarray] = field(default_factory=dict)


# -- writing ---------------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data": base64.b64encode(array.tobytes()).decode(),
    }


def created_now() -> str:
    """The `created` field of a new `trainer.json`: local time, ISO 8601 to the microsecond
    with its offset (`2026-12-08T00:21:36.688140+00:00`); `latest` orders checkpoints by it."""
    return datetime.now().astimezone().isoformat(timespec="microseconds")


def created_time(meta: dict[str, Any]) -> float | None:
    """A record's `created` as a POSIX timestamp, or None when absent or unreadable (older
    records have whole seconds: `2026-12-08T00:21:36+0000`)."""
    try:
        return datetime.fromisoformat(str(meta["created"])).timestamp()
    except (KeyError, ValueError, TypeError, OverflowError, OSError):
        return None


def write_checkpoint(root: Path | str, state: CanonicalState, info: dict[str, Any]) -> Path:
    """Writes `root/step-<state.step>/` atomically and returns its path.

    Every file is written into `.tmp-step-<N>-<id>/`, fsynced with its directory, and the
    directory is renamed into place. A checkpoint of the same step is first renamed to
    `.replaced-step-<N>-<id>/`, which still counts as step N until the new one is in place.

    Args:
        root: the checkpoints directory (created if missing).
        state: what to save.
        info: trainer facts for `trainer.json` (epoch, position, spec, backend, metrics ...).

    Raises:
        CheckpointError: the directory cannot be written; names the path and the cause
            (e.g. `No space left on device`, `Read-only file system`, `Permission denied`).
    """
    root = Path(root)
    final = root / f"step-{state.step}"
    temp = root / f".tmp-step-{state.step}-{uuid.uuid4().hex}"
    old = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        temp.mkdir()
        files = {}
        for name, tensors in zip(TENSOR_FILES, (state.params, state.optimizer), strict=True):
            files[name] = write_tensor_file(temp / name, tensors, {"format": FORMAT})
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "step": int(state.step),
            "created": created_now(),
            "files": files,
            "rng": {k: _encode_array(v) for k, v in state.rng.items()},
            **info,
        }
        meta = json.loads(json.dumps(record, default=str))  # JSON types, as read back
        meta.pop(DIGEST_KEY, None)
        meta[DIGEST_KEY] = record_digest(meta)  # last: it covers every other field
        _write_file(temp / "trainer.json", json.dumps(meta, indent=1).encode())
        _fsync(temp)
        if final.exists():
            old = root / f".replaced-step-{state.step}-{uuid.uuid4().hex}"
            final.rename(old)
        temp.rename(final)
        _fsync(root)
    except BaseException as err:
        shutil.rmtree(temp, ignore_errors=True)
        if old is not None and not final.exists():
            old.rename(final)
        if not isinstance(err, OSError):
            raise
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        raise CheckpointError(
            f"cannot write checkpoint {final}: {err.strerror or err}{where}"
        ) from err
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_checkpoint(path: Path | str) -> None:
    """Deletes a checkpoint: renamed to a temporary name first, so it is never seen half-deleted."""
    path = Path(path)
    match = _STEP_DIR.match(path.name)
    if match is None or not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory, not deleting it")
    doomed = path.with_name(f".old-step-{match.group(1)}-{uuid.uuid4().hex}")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


# -- reading ---------------------------------------------------------------------------------


def read_checkpoint(path: Path | str) -> tuple[CanonicalState, dict[str, Any]]:
    """Loads and verifies a checkpoint directory: (state, trainer.json contents).

    Nothing in it is executed or imported: the stored spec stays plain data in `meta["spec"]`.

    `trainer.json` must match its digest (format 2; format 1 had none and is read with a
    warning) and every field is checked (`state_checks.check_meta`); tensors must be finite.

    Raises:
        CheckpointError: missing, foreign, corrupt (framing, checksum, digest), edited into
            nonsense, non-finite or from a newer crosstrain; names the file and the problem.
    """
    path = Path(path)
    meta_path = path / "trainer.json"
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: not a checkpoint directory (expected step-<N>/ with trainer.json)"
        )
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: missing, not a crosstrain checkpoint")
    try:
        if meta_path.stat().st_size > _MAX_JSON:
            raise CheckpointError(f"{meta_path}: too large for a trainer.json")
        meta = strict_json(meta_path.read_bytes())
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError, JSONDecodeError, duplicate
        raise CheckpointError(f"{meta_path}: invalid JSON ({err})") from None
    except OSError as err:
        raise CheckpointError(f"{meta_path}: unreadable ({err.strerror or err})") from None
    match = _STEP_DIR.match(path.name) or _REPLACED_DIR.match(path.name)
    if not check_meta(meta, meta_path, int(match.group(1)) if match else None):
        print(
            f"warning: {meta_path}: written by an older crosstrain (format 1, no digest): "
            "its fields are checked, but an edit cannot be detected",
            file=sys.stderr,
        )
    tensors = [read_tensor_file(path / name, meta["files"][name]) for name in TENSOR_FILES]
    for name, loaded in zip(TENSOR_FILES, tensors, strict=True):
        check_finite(loaded, path / name)
    try:
        rng = {str(k): decode_array(v) for k, v in meta.get("rng", {}).items()}
    except (KeyError, ValueError, TypeError, binascii.Error) as err:
        raise CheckpointError(f"{meta_path}: invalid rng entry ({err})") from None
    return CanonicalState(tensors[0], tensors[1], meta["step"], rng), meta


# -- finding and cleaning -----------------------------------------------------------------


def list_checkpoints(root: Path | str) -> list[Path]:
    """Complete checkpoints under `root`, oldest step first (temporary directories never count).

    A checkpoint being replaced by a newer write of the same step counts under its temporary
    name until the new one is renamed into place.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found: dict[int, Path] = {}
    replaced: dict[int, Path] = {}
    for p in root.iterdir():
        if (m := _STEP_DIR.match(p.name)) and (p / "trainer.json").is_file():
            found[int(m.group(1))] = p
        elif (m := _REPLACED_DIR.match(p.name)) and (p / "trainer.json").is_file():
            replaced[int(m.group(1))] = p
    for step, p in replaced.items():
        found.setdefault(step, p)
    return [found[step] for step in sorted(found)]


def checkpoint_step(path: Path | str) -> int:
    """The step of a checkpoint directory from its name (`step-<N>` or a replaced one)."""
    name = Path(path).name
    match = _STEP_DIR.match(name) or _REPLACED_DIR.match(name)
    if match is None:
        raise CheckpointError(f"{path}: not named like a checkpoint (step-<N>)")
    return int(match.group(1))


def latest_checkpoint(root: Path | str) -> Path | None:
    """The complete checkpoint with the highest step, found by scanning (no pointer file)."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def clean_temporary(root: Path | str) -> list[Path]:
    """Removes leftovers of interrupted writes and deletions.

    Only directories named exactly like crosstrain's temporaries (`.tmp-step-<N>-<32 hex>`,
    `.old-step-<N>-<32 hex>`, `.replaced-step-<N>-<32 hex>`) are touched; anything else in
    `root` is left alone. A replaced checkpoint whose successor never arrived is renamed back.
    """
    root = Path(root)
    removed = []
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if not child.is_dir() or child.is_symlink():
                continue
            match = _REPLACED_DIR.match(child.name)
            if match and not (root / f"step-{match.group(1)}").exists():
                child.rename(root / f"step-{match.group(1)}")
            elif match or _TEMP_DIR.match(child.name):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def compatibility_problem(
    state: CanonicalState, expected: dict[str, tuple[int, ...]]
) -> str | None:
    """The first parameter in model order whose name or shape does not fit, or None."""
    for name, shape in expected.items():
        if name not in state.params:
            return f"parameter {name} (shape {tuple(shape)} in this model) is not in the checkpoint"
        if tuple(state.params[name].shape) != tuple(shape):
            return (
                f"parameter {name} has shape {tuple(state.params[name].shape)} in the checkpoint "
                f"and {tuple(shape)} in this model"
            )
    extra = [n for n in state.params if n not in expected]
    if not extra:
        return None
    return (
        f"the checkpoint has parameter {extra[0]} (shape {tuple(state.params[extra[0]].shape)}) "
        "that this model lacks"
    )


def check_compatible(
    state: CanonicalState, expected: dict[str, tuple[int, ...]], where: str
) -> None:
    """Raises CheckpointError unless the state's parameters match the model's names and shapes.

    The message names the first mismatching parameter in model order with both shapes.
    """
    problem = compatibility_problem(state, expected)
    if problem is not None:
        raise CheckpointError(f"{where}: checkpoint does not fit this model: {problem}")
