"""Checkpoint tensor files written and read tensor by tensor: plain safetensors both ways."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from crosstrain.checkpoint import stream
from crosstrain.checkpoint.stream import read_tensor_file, write_tensor_file
from crosstrain.errors import CheckpointError
from safetensors.numpy import load_file, save_file


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(300, 70)).astype(np.float32)
    return {
        "dense/kernel": kernel.T,  # a transposed view: copied a block of rows at a time
        "dense/bias": rng.normal(size=70).astype(np.float32),
        "big_endian": np.arange(12, dtype=">f8").reshape(3, 4),
        "mask": np.array([True, False, True]),
        "count": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 5), np.float32),
        "ids": np.arange(1000, dtype=np.int32)[::3],
    }


def test_streamed_file_is_safetensors_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "BLOCK", 4096)  # many blocks per tensor
    tensors = _tensors()
    path = tmp_path / "model.safetensors"
    sha = write_tensor_file(path, tensors, {"format": "crosstrain-checkpoint"})
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    for loaded in (load_file(str(path)), read_tensor_file(path, sha)):
        assert set(loaded) == set(tensors)
        for name, value in tensors.items():
            np.testing.assert_array_equal(loaded[name], value)
            assert loaded[name].shape == value.shape


def test_reads_files_written_by_safetensors(tmp_path: Path) -> None:
    tensors = {k: np.ascontiguousarray(v) for k, v in _tensors().items() if v.size}
    tensors["big_endian"] = tensors["big_endian"].astype("<f8")
    path = tmp_path / "old.safetensors"
    save_file(tensors, str(path), metadata={"format": "crosstrain-checkpoint"})
    loaded = read_tensor_file(path, hashlib.sha256(path.read_bytes()).hexdigest())
    for name, value in tensors.items():
        np.testing.assert_array_equal(loaded[name], value)


def test_checksum_checked_while_reading(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    sha = write_tensor_file(path, {"w": np.ones((64, 64), np.float32)}, {})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_tensor_file(path, sha)
