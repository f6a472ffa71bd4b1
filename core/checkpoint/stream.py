"""safetensors files written and read tensor by tensor, hashed on the way.

A checkpoint is written from the arrays as they are (views included): the header first, then
each tensor's bytes in blocks of at most `BLOCK` bytes, each block fed to the file and to the
sha256 at once. A C-contiguous little-endian array is written from its own memory; any other
(a transposed view, another byte order) is copied one block of rows at a time. So a save
holds no whole-file buffer and no copy of the state, only one block.

Reading parses and checks the header (`checks.check_tensor_file`), allocates each tensor once
and reads the file into it block by block, hashing the same blocks: one pass over the bytes,
no second read for the checksum. The files are plain safetensors (`safetensors.numpy.load_file`
reads them, and this reads theirs).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from crosstrain.checkpoint.checks import check_tensor_file
from crosstrain.errors import CheckpointError

BLOCK = 8 << 20
"""Bytes per write, read and hash update (and the most a non-contiguous tensor copies at once)."""

_NAMES = {
    "b": "BOOL",
    "u1": "U8",
    "i1": "I8",
    "i2": "I16",
    "u2": "U16",
    "f2": "F16",
    "i4": "I32",
    "u4": "U32",
    "f4": "F32",
    "i8": "I64",
    "u8": "U64",
    "f8": "F64",
}
_DTYPES = {name: np.dtype("?" if code == "b" else "<" + code) for code, name in _NAMES.items()}


def _dtype_name(name: str, array: np.ndarray) -> str:
    code = "b" if array.dtype.kind == "b" else f"{array.dtype.kind}{array.dtype.itemsize}"
    if code not in _NAMES:
        raise CheckpointError(
            f"tensor {name} has dtype {array.dtype}, which safetensors cannot hold"
        )
    return _NAMES[code]


def _blocks(array: np.ndarray) -> Any:
    """The array's bytes in C order and little-endian, as buffers of at most about `BLOCK`."""
    little = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if array.flags.c_contiguous and little == array.dtype:
        flat = memoryview(array.reshape(-1).view(np.uint8))
        for start in range(0, len(flat), BLOCK):
            yield flat[start : start + BLOCK]
        return
    if array.ndim == 0:
        yield np.ascontiguousarray(array, dtype=little).tobytes()
        return
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
    per_block = max(1, BLOCK // max(1, rows[0].nbytes))
    for start in range(0, rows.shape[0], per_block):
        block = np.ascontiguousarray(rows[start : start + per_block], dtype=little)
        yield memoryview(block.reshape(-1).view(np.uint8))


def write_tensor_file(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """Writes `tensors` as a new safetensors file at `path`, fsynced; returns its sha256 (hex)."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, array in tensors.items():
        size = array.size * array.dtype.itemsize
        header[name] = {
            "dtype": _dtype_name(name, array),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    digest = hashlib.sha256()
    with path.open("xb") as handle:
        for block in (struct.pack("<Q", len(raw)), raw):
            handle.write(block)
            digest.update(block)
        for array in tensors.values():
            for block in _blocks(array):
                handle.write(block)
                digest.update(block)
        handle.flush()
        os.fsync(handle.fileno())
    return digest.hexdigest()


def _read_into(handle: BinaryIO, target: memoryview, digest: Any, path: Path) -> None:
    for start in range(0, len(target), BLOCK):
        part = target[start : start + BLOCK]
        got = 0
        while got < len(part):
            count = handle.readinto(part[got:])
            if not count:
                raise CheckpointError(f"{path}: ends early (truncated while reading)")
            got += count
        digest.update(part)


def read_tensor_file(
    path: Path, expected_sha: Any, bfloat16: bool = False
) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file whose sha256 must be `expected_sha`, in one pass
    (None: a file of someone else's, with no recorded checksum to compare). With `bfloat16`,
    BF16 tensors are admitted and come back as float32 (exactly: bf16 is float32's top half).

    Raises:
        CheckpointError: missing, framing wrong (see `check_tensor_file`), checksum mismatch.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    header = check_tensor_file(path, bfloat16)
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"),
        key=lambda item: int(item[1]["data_offsets"][0]),
    )
    digest = hashlib.sha256()
    tensors: dict[str, np.ndarray] = {}
    try:
        with path.open("rb", buffering=0) as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            digest.update(struct.pack("<Q", length))
            _read_into(handle, memoryview(bytearray(length)), digest, path)
            for name, entry in entries:
                brain = entry["dtype"] == "BF16"
                dtype = np.dtype("<u2") if brain else _DTYPES[entry["dtype"]]
                array = np.empty([int(d) for d in entry["shape"]], dtype)
                if array.size:
                    _read_into(handle, memoryview(array.reshape(-1).view(np.uint8)), digest, path)
                if brain:
                    array = (array.astype("<u4") << 16).view("<f4")
                tensors[name] = array
    except OSError as err:
        raise CheckpointError(f"{path}: unreadable ({err.strerror or err})") from None
    if expected_sha is not None and expected_sha != digest.hexdigest():
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupt or was changed")
    return tensors
