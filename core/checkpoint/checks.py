"""Checks that a checkpoint's files are what they claim, before anything is allocated or used.

Used by `crosstrain.checkpoint.format.read_checkpoint`; every failure is a CheckpointError naming the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.errors import CheckpointError

FORMAT = "crosstrain-checkpoint"
FORMAT_VERSION = 2
"""2: `trainer.json` carries `digest` (sha256 of the rest of the record); 1 had none."""
DIGEST_KEY = "digest"
TENSOR_FILES = ("model.safetensors", "optimizer.safetensors")
_MAX_HEADER = 100 << 20
_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_RNG_DTYPES = frozenset({"uint8", "uint32", "uint64", "int32", "int64", "float64", "float32"})
_MAX_COUNT = 1 << 53
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RECORD_KEYS = frozenset(
    {
        "format",
        "format_version",
        "digest",
        "step",
        "created",
        "files",
        "rng",
        "epoch",
        "batch_in_epoch",
        "global_step",
        "skipped_steps",
        "seed",
        "data_order_seed",
        "history",
        "spec",
        "backend",
        "versions",
        "callbacks",
        "tokenizer",
    }
)


def check_tensor_file(path: Path | str, bfloat16: bool = False) -> dict[str, Any]:
    """Checks a safetensors file's framing against its size, before any tensor is read.

    The file must start with an 8-byte little-endian header length and a JSON header whose
    tensors have known dtypes, and whose byte ranges match their shapes, tile the data area
    exactly and end at the end of the file. A pickle or zip (`torch.save`) is named as such.
    `bfloat16` also admits BF16 tensors (given weights; crosstrain's checkpoints hold none).

    Raises:
        CheckpointError: naming the file and what is wrong.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else size
        if length > min(size - 8, _MAX_HEADER):
            if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
                raise CheckpointError(
                    f"{path}: is a Python pickle, refused (crosstrain never unpickles)"
                )
            if head[:4] == b"PK\x03\x04":
                raise CheckpointError(f"{path}: is a zip archive (torch.save?), not safetensors")
            raise CheckpointError(
                f"{path}: header claims {length} bytes but the file has {size}: "
                "truncated or not a safetensors file"
            )
        raw = handle.read(length)
    try:
        header = strict_json(raw)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - length
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            itemsize = 2 if bfloat16 and entry["dtype"] == "BF16" else _DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            begin, end = (int(v) for v in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{path}: tensor {name!r} has an invalid or unsupported header entry {entry!r}"
            ) from None
        if any(d < 0 for d in shape) or not 0 <= begin <= end:
            raise CheckpointError(f"{path}: tensor {name!r} has a negative shape or offset")
        needed = math.prod(shape) * itemsize
        if end - begin != needed or end > data_size:
            raise CheckpointError(
                f"{path}: header lies about tensor {name!r}: shape {shape} needs {needed} bytes, "
                f"offsets {begin}..{end}, data area {data_size} bytes"
            )
        ranges.append((begin, end))
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise CheckpointError(f"{path}: tensors overlap or leave gaps in the data area")
        position = end
    if position != data_size:
        raise CheckpointError(
            f"{path}: {data_size - position} bytes after the last tensor (truncated or padded)"
        )
    return header


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r} (which one counts would be a guess)")
        seen[key] = value
    return seen


def strict_json(data: str | bytes) -> Any:
    """`json.loads`, refusing a mapping that names a key twice (ValueError): a record or header
    with two `best_path`s or two entries for one tensor is an edit, not "last one wins"."""
    return json.loads(data, object_pairs_hook=_unique_keys)


def decode_array(entry: Any) -> np.ndarray:
    dtype = np.dtype(entry["dtype"]) if entry["dtype"] in _RNG_DTYPES else None
    if dtype is None:
        raise ValueError(f"dtype {entry['dtype']!r} is not allowed")
    shape = [int(d) for d in entry["shape"]]
    data = base64.b64decode(entry["data"], validate=True)
    if any(d < 0 for d in shape) or len(data) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{len(data)} bytes do not fill shape {shape} of {dtype}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def record_digest(record: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a `trainer.json` record without its digest:
    keys sorted, no spaces, ASCII; floats as Python writes them, so a read-back record
    gives the same digest."""
    body = {k: v for k, v in record.items() if k != DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Record:
    """Field checks of one `trainer.json`; every failure names the file and the field."""

    def __init__(self, meta: dict[str, Any], meta_path: Path):
        self.meta, self.meta_path = meta, meta_path

    def fail(self, problem: str) -> None:
        raise CheckpointError(f"{self.meta_path}: invalid trainer.json: {problem}")

    def count(self, key: str, required: bool = False) -> int | None:
        if key not in self.meta:
            if required:
                self.fail(f"{key} is missing")
            return None
        value = self.meta[key]
        if not _is_int(value) or not 0 <= value <= _MAX_COUNT:
            self.fail(f"{key} is {_shown(value)} (expected an integer from 0 to 2**53)")
        return value

    def kind(self, key: str, kind: type) -> Any:
        value = self.meta.get(key)
        if key in self.meta and not isinstance(value, kind):
            self.fail(f"{key} is not a {kind.__name__} ({_shown(value)})")
        return value


_BACKEND_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(:[A-Za-z][A-Za-z0-9_-]*)?$")
"""A backend as a record names it: `torch`, `keras:jax`, a plugin's `numpy-broken`."""
_OWN_RNG = {"torch": "torch", "jax": "jax"}
"""The rng entry each built-in backend always writes (its generator's state)."""


def _is_checkpoint_path(path: str) -> bool:
    """Whether `path` names a checkpoint directory of a run: `.../checkpoints/step-<N>` (the
    ModelCheckpoint state lists its best ones so; anything else, such as `/etc`, is an edit)."""
    parts = path.replace("\\", "/").split("/")
    return (
        len(parts) >= 2
        and re.fullmatch(r"step-[0-9]+", parts[-1]) is not None
        and parts[-2] == "checkpoints"
        and ".." not in parts
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any, finite: bool = True) -> bool:
    if _is_int(value):
        return abs(value) <= _MAX_COUNT
    if not isinstance(value, float):
        return False
    return math.isfinite(value) if finite else not math.isnan(value)


def _check_history(record: _Record, history: list[Any]) -> None:
    """Records in order: epochs 0, 1, ... (an epoch stopped mid-way and resumed has two
    records), steps strictly growing, values finite numbers or null."""
    previous, epoch = 0, 0
    for index, entry in enumerate(history):
        where = f"history[{index}]"
        if not isinstance(entry, dict):
            record.fail(f"{where} is not a mapping ({_shown(entry)})")
        allowed = (0,) if index == 0 else (epoch, epoch + 1)
        if not _is_int(entry.get("epoch")) or entry["epoch"] not in allowed:
            record.fail(f"{where}.epoch is {_shown(entry.get('epoch'))}, expected {allowed[-1]}")
        epoch = entry["epoch"]
        step = entry.get("step")
        if not _is_int(step) or not previous < step <= _MAX_COUNT:
            record.fail(f"{where}.step is {_shown(step)} (each epoch takes a step or more)")
        previous = step
        for key, value in entry.items():
            if not isinstance(key, str) or not (value is None or _is_number(value)):
                record.fail(f"{where}.{key} is {_shown(value)} (expected a finite number)")


def _check_callbacks(record: _Record, callbacks: dict[str, Any]) -> None:
    """Every callback state is a mapping; the built-in callbacks' fields are typed here, a
    plugin's are checked by its own `load_state_dict`."""
    for key, state in callbacks.items():
        if not isinstance(state, dict):
            record.fail(f"callbacks.{key} is not a mapping ({_shown(state)})")
    checkpoint = callbacks.get("ModelCheckpoint")
    if checkpoint is not None:
        value, path = checkpoint.get("best_value"), checkpoint.get("best_path")
        if not (value is None or _is_number(value)) or not (path is None or isinstance(path, str)):
            record.fail(f"callbacks.ModelCheckpoint best_value/best_path are {_shown(checkpoint)}")
        if not isinstance(checkpoint.get("top_k", []), list):
            record.fail(f"callbacks.ModelCheckpoint.top_k is {_shown(checkpoint['top_k'])}")
        for entry in checkpoint.get("top_k", []):
            if not (
                isinstance(entry, list)
                and len(entry) == 2
                and _is_number(entry[0])
                and isinstance(entry[1], str)
            ):
                record.fail(f"callbacks.ModelCheckpoint.top_k has entry {_shown(entry)}")
        paths = [path] + [
            e[1] for e in checkpoint.get("top_k") or [] if isinstance(e, list) and len(e) == 2
        ]
        for named in paths:
            if isinstance(named, str) and not _is_checkpoint_path(named):
                record.fail(
                    f"callbacks.ModelCheckpoint names {_shown(named)}, which is not a checkpoint "
                    "of a run (<run>/checkpoints/step-<N>)"
                )
    stopping = callbacks.get("EarlyStopping")
    if stopping is not None:
        best, wait = stopping.get("best"), stopping.get("wait")
        if not _is_number(best, finite=False) or not _is_int(wait) or not 0 <= wait <= _MAX_COUNT:
            record.fail(f"callbacks.EarlyStopping is {_shown(stopping)}")
    timer = callbacks.get("Timer")
    if timer is not None:
        elapsed = timer.get("elapsed", 0.0)
        if not _is_number(elapsed) or elapsed < 0:
            record.fail(f"callbacks.Timer.elapsed is {_shown(elapsed)}")


def _check_position(record: _Record, dir_step: int | None) -> None:
    """step, global_step, skipped_steps, epoch, batch_in_epoch and the history agree with each
    other and with the directory name."""
    meta = record.meta
    step = record.count("step", required=True)
    epoch, batch = record.count("epoch"), record.count("batch_in_epoch")
    global_step, skipped = record.count("global_step"), record.count("skipped_steps") or 0
    if dir_step is not None and step != dir_step:
        record.fail(f"step is {step} but the directory is step-{dir_step}")
    if global_step is None:
        return
    for key in ("epoch", "batch_in_epoch", "history"):  # written with global_step, always
        if key not in meta:
            record.fail(f"{key} is missing")
    if step != global_step - skipped:
        record.fail(
            f"step {step} disagrees with global_step {global_step} - skipped_steps {skipped}"
        )
    if batch is not None and batch > global_step:
        record.fail(f"batch_in_epoch {batch} is beyond global_step {global_step}")
    if epoch is not None and epoch > global_step:
        record.fail(f"epoch {epoch} is beyond global_step {global_step} (an epoch has a step)")
    history = meta.get("history")
    if epoch is None or batch is None or not isinstance(history, list):
        return
    last = history[-1]["epoch"] if history else -1
    if last not in (epoch - 1, epoch) or (epoch > 0 and not history):
        record.fail(f"epoch {epoch} disagrees with the history (last record: epoch {last})")
    if history and history[-1]["step"] > global_step:
        record.fail(f"history[-1].step {history[-1]['step']} is beyond global_step {global_step}")
    finished = [h["step"] for h in history if h["epoch"] < epoch]
    done = finished[-1] if finished else 0
    if done + batch != global_step:
        record.fail(
            f"global_step {global_step} disagrees with the position: {done} steps by the end "
            f"of epoch {epoch - 1} + batch_in_epoch {batch}"
        )


def check_meta(meta: Any, meta_path: Path, dir_step: int | None = None) -> bool:
    """Checks a `trainer.json` record: format, digest, every field's type and range, and that
    the loop position agrees with itself and with the directory's step (`dir_step`).

    Returns:
        True when the record is protected by a digest (format 2), False for format 1.

    Raises:
        CheckpointError: naming the file and the field.
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_path}: not a crosstrain checkpoint (format is {found!r})")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{meta_path}: invalid format_version {_shown(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: format version {version} is newer than this crosstrain reads "
            f"({FORMAT_VERSION}); upgrade crosstrain"
        )
    if version >= 2 and meta.get(DIGEST_KEY) != record_digest(meta):
        raise CheckpointError(f"{meta_path}: digest mismatch (edited or corrupt)")
    record = _Record(meta, meta_path)
    unknown = sorted(str(k) for k in meta if k not in _RECORD_KEYS)
    if unknown and version >= 2:
        record.fail(f"unknown field {unknown[0]!r}")
    history = record.kind("history", list)
    if history is not None:
        _check_history(record, history)
    _check_position(record, dir_step)
    for key in ("seed", "data_order_seed"):
        if key in meta and (not _is_int(meta[key]) or abs(meta[key]) >= 1 << 64):
            record.fail(f"{key} is {_shown(meta[key])}")
    files = meta.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(files.get(n), str) and _SHA256.match(files[n]) for n in TENSOR_FILES
    ):
        record.fail("files lacks a sha256")
    for key in ("created", "backend"):
        value = record.kind(key, str)
        if value is not None and len(value) > 200:
            record.fail(f"{key} is longer than 200 characters")
    backend = meta.get("backend")
    if backend is not None and not _BACKEND_NAME.match(backend):
        record.fail(f"backend {_shown(backend)} is not a backend name (name or name:engine)")
    versions = record.kind("versions", dict)
    if versions and not all(isinstance(v, str) and len(v) <= 200 for v in versions.values()):
        record.fail(f"versions is {_shown(versions)}")
    rng = record.kind("rng", dict)
    for key, entry in (rng or {}).items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data"}:
            raise CheckpointError(f"{meta_path}: invalid rng entry {key!r}: {_shown(entry)}")
        if not isinstance(entry["shape"], list) or not all(_is_int(n) for n in entry["shape"]):
            raise CheckpointError(f"{meta_path}: invalid rng entry {key!r}: shape {_shown(entry)}")
        try:
            decode_array(entry)
        except (ValueError, TypeError, binascii.Error) as err:
            raise CheckpointError(f"{meta_path}: invalid rng entry {key!r} ({err})") from None
    own = _OWN_RNG.get(str(backend))
    if version >= 2 and own is not None and own not in (rng or {}):
        record.fail(f"rng lacks the {own!r} state that backend {backend!r} writes")
    spec = record.kind("spec", dict)
    if spec is not None:
        _check_stored_spec(record, spec)
    callbacks = record.kind("callbacks", dict)
    if callbacks is not None:
        _check_callbacks(record, callbacks)
    tokenizer = record.kind("tokenizer", dict)
    if tokenizer is not None and not isinstance(tokenizer.get("kind"), str):
        record.fail(f"tokenizer has no kind: {_shown(tokenizer)}")
    return version >= 2


def _check_stored_spec(record: _Record, spec: dict[str, Any]) -> None:
    """The stored spec stays data; only what a reader uses without validating it is checked:
    `name` (one path segment, as `Spec` requires) and `seed` (the record's `seed`)."""
    from crosstrain.spec.schema import name_problem

    if "name" in spec:
        problem = name_problem(spec["name"])
        if problem:
            record.fail(f"spec.name {_shown(spec['name'])} {problem}")
    if "seed" in spec and "seed" in record.meta and spec["seed"] != record.meta["seed"]:
        record.fail(f"seed {record.meta['seed']} disagrees with spec.seed {_shown(spec['seed'])}")


def check_finite(tensors: dict[str, np.ndarray], path: Path) -> None:
    """Refuses a tensor file with NaN or Inf values, naming the first such tensor (checked in
    blocks, so no boolean copy of a whole tensor is made)."""
    block = 1 << 20
    for name, array in tensors.items():
        if array.dtype.kind != "f":
            continue
        flat = array.reshape(-1)
        if all(np.isfinite(flat[i : i + block]).all() for i in range(0, flat.size, block)):
            continue
        bad = int(array.size - np.isfinite(array).sum())
        raise CheckpointError(
            f"{path}: tensor {name} has {bad} NaN/Inf values of {array.size}; refusing to load"
        )


def check_dtypes(
    state_params: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    path: Path,
    allow_float_cast: bool = False,
) -> None:
    """Each tensor present in both must have the model's dtype (a float of another width too
    when `allow_float_cast`, e.g. after a precision change)."""
    for name, want in expected.items():
        got = state_params.get(name)
        if got is None or got.dtype == want.dtype:
            continue
        if allow_float_cast and got.dtype.kind == want.dtype.kind == "f":
            continue
        raise CheckpointError(
            f"{path}: tensor {name} has dtype {got.dtype} in the checkpoint, "
            f"the model expects {want.dtype}"
        )
