"""The checkpoint format on disk: atomic writes under SIGKILL, cleaning, and refusing
hostile or broken files. No framework is imported here."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from crosstrain.checkpoint.checks import record_digest
from crosstrain.checkpoint.format import (
    CanonicalState,
    check_compatible,
    clean_temporary,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from crosstrain.errors import CheckpointError

HELPER = Path(__file__).with_name("checkpoint_writer.py")
KILLS = 110
OURS = re.compile(r"^\.(tmp|old|replaced)-step-\d+-[0-9a-f]{32}$")


class Zygote:
    """The helper process that forks checkpoint writers for the test to kill."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().split()[1]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _saved_steps(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [int(line.split()[1]) for line in log.read_text().splitlines() if line[:5] == "saved"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path, mode):
    """`async`: the writer thread of `trainer.checkpoint.async` does the writes; a save counts
    once the writer reported it committed."""
    root = tmp_path / "checkpoints"
    root.mkdir()
    foreign = {
        root / "notes.txt": "mine",
        root / "mydata" / "keep.bin": "data",
        root / ".tmp-step-1-not-crosstrain" / "x": "x",
        root / "step-999999" / "README": "not a checkpoint: no trainer.json",
    }
    for path, text in foreign.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    zygote = Zygote()
    rng = random.Random(0)
    last_returned, mid_write, cleaned, pid = 0, 0, 0, None
    try:
        for kill in range(KILLS):
            log = tmp_path / f"log-{kill}"
            pid = int(zygote.ask(f"fork {root} {log} {kill}{' async' if mode == 'async' else ''}"))
            if last_returned == 0:  # a loaded machine may save nothing in 0.12 s: wait for one
                deadline = time.monotonic() + 60
                while not _saved_steps(log) and time.monotonic() < deadline:
                    time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.12))
            os.kill(pid, signal.SIGKILL)
            status = int(zygote.ask(f"wait {pid}"))
            pid = None
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            last_returned = max([last_returned, *_saved_steps(log)])
            if log.exists() and log.read_text().startswith("cleaned "):
                cleaned += int(log.read_text().split()[1]) > 0
            mid_write += any(OURS.match(p.name) for p in root.iterdir())
            found = list_checkpoints(root)
            for path in found:
                state, meta = read_checkpoint(path)
                assert (state.params["dense_0/kernel"] == meta["step"]).all(), path
                assert (state.optimizer["m/dense_0/kernel"] == -meta["step"]).all(), path
            latest = read_checkpoint(latest_checkpoint(root))[1]["step"] if found else 0
            assert latest >= last_returned, f"kill {kill}: latest {latest} < saved {last_returned}"
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        zygote.close()
    print(
        f"\n{KILLS} kills, {last_returned} steps saved, {mid_write} kills left a temporary, "
        f"{cleaned} starts cleaned some"
    )
    assert last_returned > 0
    clean_temporary(root)
    assert not [p for p in root.iterdir() if p.name.startswith((".old-", ".replaced-"))]
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] == [
        ".tmp-step-1-not-crosstrain"
    ]
    for path, text in foreign.items():
        assert path.read_text() == text


def _state(step: int = 7) -> CanonicalState:
    params = {"dense_0/kernel": np.arange(12, dtype=np.float32).reshape(3, 4)}
    return CanonicalState(params, {"m/dense_0/kernel": np.ones((3, 4), np.float32)}, step, {})


def test_write_replaces_a_step_atomically_and_keeps_foreign_files(tmp_path):
    first = write_checkpoint(tmp_path, _state(), {"epoch": 1})
    (tmp_path / "mine.txt").write_text("x")
    state = _state()
    state.params["dense_0/kernel"] += 1
    again = write_checkpoint(tmp_path, state, {"epoch": 2})
    assert again == first and read_checkpoint(again)[1]["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt", "step-7"]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "ckpts", _state(), {"epoch": 0, "spec": {"name": "t"}})


def _write_meta(path: Path, meta: dict) -> None:
    """Rewrites trainer.json with a digest that matches, as someone who knows the format would."""
    meta = {k: v for k, v in meta.items() if k != "digest"}
    (path / "trainer.json").write_text(json.dumps({**meta, "digest": record_digest(meta)}))


def _resign(path: Path, name: str) -> None:
    meta = json.loads((path / "trainer.json").read_text())
    meta["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    _write_meta(path, meta)


def _refused(path: Path, file: str, problem: str) -> None:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(path / file) in str(info.value) and problem in str(info.value), str(info.value)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_pickle_is_refused_and_never_executed(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    (checkpoint / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    _resign(checkpoint, "model.safetensors")
    _refused(checkpoint, "model.safetensors", "pickle")
    assert not marker.exists()


def test_truncated_file_is_refused(checkpoint):
    file = checkpoint / "optimizer.safetensors"
    file.write_bytes(file.read_bytes()[:-10])
    _resign(checkpoint, "optimizer.safetensors")
    _refused(checkpoint, "optimizer.safetensors", "truncated")
    file.write_bytes(b"abc")
    _refused(checkpoint, "optimizer.safetensors", "truncated")


def test_a_header_lying_about_sizes_is_refused_before_allocating(checkpoint):
    header = json.dumps(
        {
            "dense_0/kernel": {
                "dtype": "F32",
                "shape": [1 << 20, 1 << 16],
                "data_offsets": [0, 1 << 38],
            }
        }
    ).encode()
    file = checkpoint / "model.safetensors"
    file.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    _resign(checkpoint, "model.safetensors")
    tracemalloc.start()
    try:
        _refused(checkpoint, "model.safetensors", "header lies")
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()
    file.write_bytes(struct.pack("<Q", 1 << 40) + header)
    _resign(checkpoint, "model.safetensors")
    _refused(checkpoint, "model.safetensors", "header claims")


def test_wrong_checksum_is_refused(checkpoint):
    file = checkpoint / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    _refused(checkpoint, "model.safetensors", "checksum mismatch")


def test_missing_file_is_refused(checkpoint):
    (checkpoint / "optimizer.safetensors").unlink()
    _refused(checkpoint, "optimizer.safetensors", "missing")
    shutil.rmtree(checkpoint)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        read_checkpoint(checkpoint)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"format_version": 99}, "format version 99 is newer"),
        ({"format": "something-else"}, "not a crosstrain checkpoint"),
        ({"step": "7; rm -rf /"}, "invalid trainer.json: step"),
        ({"files": None}, "invalid trainer.json: files"),
        ({"rng": {"torch": {"dtype": "object", "shape": [1], "data": ""}}}, "invalid rng"),
        ({"rng": {"torch": {"dtype": "uint8", "shape": [1 << 40], "data": "AA=="}}}, "invalid rng"),
        ({"epoch": 1e30}, "epoch is 1e+30"),
        ({"global_step": 83, "batch_in_epoch": 0, "history": []}, "step 7 disagrees with global"),
        ({"global_step": 7}, "batch_in_epoch is missing"),
        ({"history": [{"epoch": 0, "step": 3}, {"epoch": 1, "step": 3}]}, "history[1].step is 3"),
        ({"step": -1}, "step is -1"),
        ({"global_step": 7, "epoch": 2, "batch_in_epoch": 0, "history": []}, "epoch 2 disagrees"),
        ({"history": [{"epoch": 0, "step": 3, "train_loss": "x"}]}, "history[0].train_loss"),
        ({"spec": {"name": "../../x"}}, "spec.name '../../x' must be one path segment"),
        ({"callbacks": {"EarlyStopping": {"best": 1.0, "wait": -1}}}, "callbacks.EarlyStopping"),
        ({"callbacks": {"ModelCheckpoint": {"top_k": [[float("nan"), "p"]]}}}, "top_k"),
        ({"rng": {"torch": {"dtype": "uint8", "shape": [1], "data": "AA==", "x": 1}}}, "rng"),
        ({"surprise": 1}, "unknown field 'surprise'"),
    ],
)
def test_invalid_trainer_json_fields_are_refused(checkpoint, change, problem):
    meta = json.loads((checkpoint / "trainer.json").read_text())
    _write_meta(checkpoint, {**meta, **change})
    _refused(checkpoint, "trainer.json", problem)


def test_any_edit_of_trainer_json_without_a_new_digest_is_refused(checkpoint):
    meta = json.loads((checkpoint / "trainer.json").read_text())
    (checkpoint / "trainer.json").write_text(json.dumps({**meta, "created": "yesterday"}))
    _refused(checkpoint, "trainer.json", "digest mismatch (edited or corrupt)")
    (checkpoint / "trainer.json").write_text(
        json.dumps({k: v for k, v in meta.items() if k != "digest"})
    )
    _refused(checkpoint, "trainer.json", "digest mismatch")


def test_a_format_1_record_without_digest_loads_with_a_warning(checkpoint, capsys):
    meta = json.loads((checkpoint / "trainer.json").read_text())
    del meta["digest"]
    (checkpoint / "trainer.json").write_text(json.dumps({**meta, "format_version": 1}))
    assert read_checkpoint(checkpoint)[0].step == 7
    assert "format 1, no digest" in capsys.readouterr().err
    (checkpoint / "trainer.json").write_text(json.dumps({**meta, "format_version": 1, "step": 8}))
    _refused(checkpoint, "trainer.json", "step is 8 but the directory is step-7")


def test_non_finite_parameters_are_refused_naming_the_tensor(tmp_path):
    state = _state()
    state.params["dense_0/kernel"][1, 2] = np.nan
    path = write_checkpoint(tmp_path, state, {})
    _refused(path, "model.safetensors", "tensor dense_0/kernel has 1 NaN/Inf values")


def test_trainer_json_that_is_not_json_is_refused(checkpoint):
    (checkpoint / "trainer.json").write_text("{not json")
    _refused(checkpoint, "trainer.json", "invalid JSON")


def test_stored_spec_naming_code_is_never_imported(checkpoint, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "ct_evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    meta = json.loads((checkpoint / "trainer.json").read_text())
    meta["spec"] = {"loss": "os:system", "metrics": ["ct_evil_module:boom"]}
    _write_meta(checkpoint, meta)
    state, loaded = read_checkpoint(checkpoint)
    assert loaded["spec"]["loss"] == "os:system" and state.step == 7
    assert "ct_evil_module" not in sys.modules and not marker.exists()


def test_incompatible_state_names_the_first_mismatch_with_both_shapes():
    state = _state()
    with pytest.raises(
        CheckpointError, match=r"dense_0/kernel has shape \(3, 4\) in the checkpoint and \(3, 5\)"
    ):
        check_compatible(state, {"dense_0/kernel": (3, 5)}, "torch")
    with pytest.raises(
        CheckpointError, match=r"dense_1/bias \(shape \(2,\) in this model\) is not in"
    ):
        check_compatible(state, {"dense_0/kernel": (3, 4), "dense_1/bias": (2,)}, "torch")
    check_compatible(state, {"dense_0/kernel": (3, 4)}, "torch")
