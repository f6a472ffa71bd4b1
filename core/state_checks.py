"""Checks that a checkpoint's files are what they claim, before anything is allocated or used.

Used by `crosstrain.state.read_checkpoint`; every failure is a CheckpointError naming the file.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError

FORMAT = "crosstrain-checkpoint"
FORMAT_VERSION = 1
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


def check_tensor_file(path: Path | str) -> None:
    """Checks a safetensors file's framing against its size, before any tensor is read.

    The file must start with an 8-byte little-endian header length and a JSON header whose
    tensors have known dtypes, and whose byte ranges match their shapes, tile the data area
    exactly and end at the end of the file. A pickle or zip (`torch.save`) is named as such.

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
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - length
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            itemsize = _DTYPES[entry["dtype"]]
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


def decode_array(entry: Any) -> np.ndarray:
    dtype = np.dtype(entry["dtype"]) if entry["dtype"] in _RNG_DTYPES else None
    if dtype is None:
        raise ValueError(f"dtype {entry['dtype']!r} is not allowed")
    shape = [int(d) for d in entry["shape"]]
    data = base64.b64decode(entry["data"], validate=True)
    if any(d < 0 for d in shape) or len(data) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{len(data)} bytes do not fill shape {shape} of {dtype}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def check_meta(meta: Any, meta_path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_path}: not a crosstrain checkpoint (format is {found!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{meta_path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: format version {version} is newer than this crosstrain reads "
            f"({FORMAT_VERSION}); upgrade crosstrain"
        )
    ints = ("step", "epoch", "batch_in_epoch", "global_step")
    for key in ints:
        value = meta.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{meta_path}: invalid trainer.json: {key} is {value!r}")
    if "step" not in meta:
        raise CheckpointError(f"{meta_path}: invalid trainer.json: step is missing")
    files = meta.get("files")
    if not isinstance(files, dict) or not all(isinstance(files.get(n), str) for n in TENSOR_FILES):
        raise CheckpointError(f"{meta_path}: invalid trainer.json: files lacks a sha256")
    for key, kind in (("rng", dict), ("history", list), ("spec", dict), ("callbacks", dict)):
        if key in meta and not isinstance(meta[key], kind):
            raise CheckpointError(
                f"{meta_path}: invalid trainer.json: {key} is not a {kind.__name__}"
            )
