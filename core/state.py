"""Canonical state and the checkpoint format: `step-<N>/` with two safetensors files and JSON.

Written into a temporary sibling, fsynced, then renamed, so a crash leaves the previous
checkpoint whole; nothing is ever unpickled, and a file that is not ours fails with a
CheckpointError that names the file and the problem.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError

FORMAT = "crosstrain-checkpoint"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TEMP_DIR = re.compile(r"^\.tmp-step-\d+-[0-9a-f]{32}$|^\.old-step-\d+-[0-9a-f]{32}$")


@dataclass
class CanonicalState:
    """A backend's whole training state in the layout every backend shares.

    Attributes:
        params: `<layer>/<param>` → array, trainable and not (BatchNorm moving statistics).
        optimizer: `<slot>/<layer>/<param>` → array (slots of `crosstrain.optim`).
        step: optimizer updates done.
        rng: backend-specific random state (`torch`, `jax` ...) → uint8/uint32 array.
    """

    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    step: int = 0
    rng: dict[str, np.ndarray] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data": base64.b64encode(array.tobytes()).decode(),
    }


def _decode_array(entry: dict[str, Any]) -> np.ndarray:
    return (
        np.frombuffer(base64.b64decode(entry["data"]), dtype=np.dtype(entry["dtype"]))
        .reshape(entry["shape"])
        .copy()
    )


def _save_tensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()},
        str(path),
        metadata={"format": FORMAT},
    )


def write_checkpoint(root: Path, state: CanonicalState, info: dict[str, Any]) -> Path:
    """Writes `root/step-<state.step>/` atomically and returns its path.

    Args:
        root: the checkpoints directory (created if missing).
        state: what to save.
        info: trainer facts for `trainer.json` (epoch, position, spec, backend, metrics ...).

    Raises:
        CheckpointError: the directory cannot be written (names the path and the cause).
    """
    root = Path(root)
    final = root / f"step-{state.step}"
    temp = root / f".tmp-step-{state.step}-{uuid.uuid4().hex}"
    try:
        temp.mkdir(parents=True)
        _save_tensors(temp / "model.safetensors", state.params)
        _save_tensors(temp / "optimizer.safetensors", state.optimizer)
        files = {
            name: _sha256(temp / name) for name in ("model.safetensors", "optimizer.safetensors")
        }
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "step": state.step,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": files,
            "rng": {k: _encode_array(v) for k, v in state.rng.items()},
            **info,
        }
        (temp / "trainer.json").write_text(
            json.dumps(meta, indent=1, default=str), encoding="utf-8"
        )
        for name in ("model.safetensors", "optimizer.safetensors", "trainer.json"):
            _fsync(temp / name)
        _fsync(temp)
        old = None
        if final.exists():
            old = root / f".old-step-{state.step}-{uuid.uuid4().hex}"
            final.rename(old)
        temp.rename(final)
        _fsync(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(temp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {final}: {err.strerror or err}") from err
    return final


def read_checkpoint(path: Path | str) -> tuple[CanonicalState, dict[str, Any]]:
    """Loads and verifies a checkpoint directory: (state, trainer.json contents).

    Raises:
        CheckpointError: missing, foreign, corrupt (checksum) or unreadable; the message says which.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    meta_path = path / "trainer.json"
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: not a checkpoint directory (expected step-<N>/ with trainer.json)"
        )
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: not a crosstrain checkpoint (trainer.json is missing)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{meta_path}: corrupt trainer.json ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{meta_path}: not a crosstrain checkpoint (format is {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {meta['format_version']} is newer than this crosstrain reads ({FORMAT_VERSION})"
        )
    tensors = {}
    for name in ("model.safetensors", "optimizer.safetensors"):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        expected = meta.get("files", {}).get(name)
        if expected != _sha256(file):
            raise CheckpointError(f"{file}: checksum mismatch, the file is corrupt or was changed")
        try:
            tensors[name] = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{file}: unreadable safetensors file ({err})") from None
    try:
        rng = {k: _decode_array(v) for k, v in meta.get("rng", {}).items()}
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{meta_path}: corrupt rng entry ({err})") from None
    state = CanonicalState(
        tensors["model.safetensors"], tensors["optimizer.safetensors"], int(meta["step"]), rng
    )
    return state, meta


def list_checkpoints(root: Path | str) -> list[Path]:
    """Complete checkpoints under `root`, oldest step first (temporary directories never count)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / "trainer.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path | str) -> Path | None:
    """The complete checkpoint with the highest step, found by scanning (no pointer file)."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def clean_temporary(root: Path | str) -> list[Path]:
    """Removes leftovers of interrupted writes: only directories named like crosstrain's temporaries."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.is_dir() and _TEMP_DIR.match(child.name):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def check_compatible(
    state: CanonicalState, expected: dict[str, tuple[int, ...]], where: str
) -> None:
    """Raises CheckpointError if the state's parameters do not match the model's names and shapes."""
    missing = sorted(set(expected) - set(state.params))
    extra = sorted(set(state.params) - set(expected))
    wrong = sorted(
        n
        for n in set(expected) & set(state.params)
        if tuple(state.params[n].shape) != tuple(expected[n])
    )
    problems = []
    if missing:
        problems.append(f"missing {missing[:5]}")
    if extra:
        problems.append(f"unexpected {extra[:5]}")
    if wrong:
        problems.append(
            "shape mismatch "
            + ", ".join(
                f"{n}: {tuple(state.params[n].shape)} vs model {tuple(expected[n])}"
                for n in wrong[:5]
            )
        )
    if problems:
        raise CheckpointError(
            f"{where}: checkpoint does not fit this model ({'; '.join(problems)})"
        )
