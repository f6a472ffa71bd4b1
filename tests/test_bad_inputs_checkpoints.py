"""Issue 14, checkpoints: nothing in a checkpoint is trusted blindly, and a resume is explicit.

One row per case, each on the real command line in a copy of one trained run: the exit code,
the message and that nothing else changed (a refused resume writes nothing at all, not even in
`runs/`). Edits are re-signed (tensor sha256 and the record's digest recomputed) where the row
tests a check behind the digest, as someone who knows the format would do.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import crosstrain as ct
import pytest
from bad_inputs import Refusal, assert_refused, changed_files, run_cli, snapshot
from conftest import tiny_spec
from crosstrain.checkpoint.checks import record_digest
from crosstrain.spec.schema import load_spec
from crosstrain.train.rundir import LOCK_FILE, new_run_dir

RUN = Path("runs/tiny/20000101-000000")
CKPT = RUN / "checkpoints" / "step-12"
FIT = "fit spec.json --backend torch --no-progress"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with spec.json and one finished 2-epoch run (checkpoint step-12)."""
    root = tmp_path_factory.mktemp("trained")
    spec = tiny_spec()
    (root / "spec.json").write_text(json.dumps(spec))
    wide = tiny_spec()
    wide["model"]["layers"][0]["units"] = 32
    (root / "wide.json").write_text(json.dumps(wide))
    (root / "bad_name.json").write_text(json.dumps(tiny_spec(name="../../escaped")))
    (root / "abs_name.json").write_text(json.dumps(tiny_spec(name="/tmp/abs")))
    ct.fit(spec, backend="torch", run_dir=root / RUN)
    assert (root / CKPT / "trainer.json").is_file()
    return root


@pytest.fixture
def work(template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "work"
    shutil.copytree(template, target)
    return target


def _meta(cwd: Path) -> dict:
    return json.loads((cwd / CKPT / "trainer.json").read_text())


def _resign(cwd: Path, meta: dict) -> None:
    for name in ("model.safetensors", "optimizer.safetensors"):
        meta["files"][name] = hashlib.sha256((cwd / CKPT / name).read_bytes()).hexdigest()
    meta = {k: v for k, v in meta.items() if k != "digest"}
    (cwd / CKPT / "trainer.json").write_text(json.dumps({**meta, "digest": record_digest(meta)}))


def _edit(change: Callable[[dict], None], resign: bool = True) -> Callable[[Path], None]:
    def setup(cwd: Path) -> None:
        meta = _meta(cwd)
        change(meta)
        if resign:
            _resign(cwd, meta)
        else:
            (cwd / CKPT / "trainer.json").write_text(json.dumps(meta))

    return setup


def _tensor_edit(tensor: str, dtype: str | None = None, nan: bool = False) -> Callable:
    """Relabels a tensor's dtype in model.safetensors' header, or writes NaN into its first
    element, then re-signs everything."""

    def setup(cwd: Path) -> None:
        path = cwd / CKPT / "model.safetensors"
        raw = path.read_bytes()
        length = struct.unpack("<Q", raw[:8])[0]
        header, data = json.loads(raw[8 : 8 + length]), bytearray(raw[8 + length :])
        if dtype:
            header[tensor]["dtype"] = dtype
        if nan:
            begin = header[tensor]["data_offsets"][0]
            data[begin : begin + 4] = struct.pack("<f", float("nan"))
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(data))
        _resign(cwd, _meta(cwd))

    return setup


def _duplicate_key(cwd: Path) -> None:
    """trainer.json with `step` twice (same value: the digest of the parsed record matches)."""
    meta = _meta(cwd)
    text = json.dumps(meta)
    (cwd / CKPT / "trainer.json").write_text(text[:-1] + f', "step": {meta["step"]}}}')


def _duplicate_tensor(cwd: Path) -> None:
    """model.safetensors whose header names `dense_0/bias` twice, then re-signed."""
    path = cwd / CKPT / "model.safetensors"
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    entry = json.dumps({"dense_0/bias": header["dense_0/bias"]})[1:-1]
    text = (json.dumps(header)[:-1] + ", " + entry + "}").encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])
    _resign(cwd, _meta(cwd))


def _set(**values: object) -> Callable[[dict], None]:
    return lambda meta: meta.update(values)


def _old_format_edited(meta: dict) -> None:
    meta.update(format_version=1, global_step=83)
    del meta["digest"]


def _rename_step(cwd: Path) -> None:
    (cwd / CKPT).rename(cwd / CKPT.with_name("step-13"))


def _nothing(cwd: Path) -> None:
    pass


RESUME = f"{FIT} --max-epochs 3 --resume {CKPT}"

CASES: dict[str, tuple[Callable[[Path], None], str, Refusal]] = {
    "spec_name_traversal": (
        _nothing,
        "fit bad_name.json --backend torch --no-progress",
        Refusal(fragments=("name", "must be one path segment", "'/' is not allowed")),
    ),
    "spec_name_absolute": (
        _nothing,
        "fit abs_name.json --backend torch --no-progress",
        Refusal(fragments=("name", "must be one path segment")),
    ),
    "stored_spec_name_traversal_export": (
        _edit(lambda m: m["spec"].update(name="../../escaped")),
        f"export {CKPT} --to torch",
        Refusal(fragments=("trainer.json", "spec.name '../../escaped' must be one path segment")),
    ),
    "trainer_json_edited_without_digest": (
        _edit(_set(created="yesterday"), resign=False),
        RESUME,
        Refusal(fragments=(f"{CKPT}/trainer.json", "digest mismatch (edited or corrupt)")),
    ),
    "global_step_83": (
        _edit(_set(global_step=83)),
        RESUME,
        Refusal(fragments=("trainer.json", "step 12 disagrees with global_step 83")),
    ),
    "epoch_1e30": (
        _edit(_set(epoch=1e30)),
        RESUME,
        Refusal(fragments=("trainer.json", "epoch is 1e+30")),
    ),
    "epoch_beyond_history": (
        _edit(_set(epoch=5)),
        RESUME,
        Refusal(fragments=("trainer.json", "epoch 5 disagrees with the history")),
    ),
    "negative_step": (
        _edit(_set(step=-1)),
        RESUME,
        Refusal(fragments=("trainer.json", "step is -1")),
    ),
    "history_not_numbers": (
        _edit(lambda m: m["history"][0].update(train_loss="x")),
        RESUME,
        Refusal(fragments=("trainer.json", "history[0].train_loss is 'x'")),
    ),
    "rng_entry_extra_key": (
        _edit(lambda m: m["rng"].update(torch={**m["rng"]["torch"], "x": 1})),
        RESUME,
        Refusal(fragments=("trainer.json", "invalid rng entry 'torch'")),
    ),
    "callback_state_wrong_type": (
        _edit(lambda m: m["callbacks"]["ModelCheckpoint"].update(best_value="x")),
        RESUME,
        Refusal(fragments=("trainer.json", "callbacks.ModelCheckpoint")),
    ),
    "step_disagrees_with_directory": (
        _rename_step,
        f"{FIT} --max-epochs 3 --resume {CKPT.with_name('step-13')}",
        Refusal(fragments=("step is 12 but the directory is step-13",)),
    ),
    "old_format_without_digest_still_checked": (
        _edit(_old_format_edited, resign=False),
        RESUME,
        Refusal(fragments=("step 12 disagrees with global_step 83",)),
    ),
    "different_model": (
        _nothing,
        f"fit wide.json --backend torch --no-progress --max-epochs 3 --resume {CKPT}",
        Refusal(
            fragments=(
                "was trained with a different model",
                "model.layers[0].units: 16 -> 32",
                "dense_0/kernel has shape (8, 16) in the checkpoint and (8, 32)",
            )
        ),
    ),
    "changed_spec_needs_flag": (
        _nothing,
        f"{RESUME} --set seed=3 data.batch_size=16",
        Refusal(fragments=("seed: 0 -> 3", "data.batch_size: 32 -> 16", "--resume-changed")),
    ),
    "dtype_relabelled": (
        _tensor_edit("dense_0/bias", dtype="I32"),
        RESUME,
        Refusal(
            fragments=(
                "model.safetensors: tensor dense_0/bias has dtype int32",
                "the model expects float32",
            )
        ),
    ),
    "nan_parameter": (
        _tensor_edit("dense_2/bias", nan=True),
        RESUME,
        Refusal(fragments=("model.safetensors: tensor dense_2/bias has 1 NaN/Inf values",)),
    ),
    # issue 25: edits behind a recomputed digest
    "best_path_outside_the_run": (
        _edit(lambda m: m["callbacks"]["ModelCheckpoint"].update(best_path="/etc")),
        RESUME,
        Refusal(fragments=("trainer.json", "ModelCheckpoint names '/etc'", "not a checkpoint")),
    ),
    "top_k_path_traversal": (
        _edit(
            lambda m: m["callbacks"]["ModelCheckpoint"].update(
                top_k=[[0.5, "runs/../../checkpoints/step-1"]]
            )
        ),
        RESUME,
        Refusal(
            fragments=(
                "trainer.json",
                "ModelCheckpoint names 'runs/../../checkpoints",
            )
        ),
    ),
    "backend_not_a_name": (
        _edit(_set(backend="../../etc")),
        RESUME,
        Refusal(fragments=("trainer.json", "backend '../../etc' is not a backend name")),
    ),
    "rng_empty": (
        _edit(_set(rng={})),
        RESUME,
        Refusal(fragments=("trainer.json", "rng lacks the 'torch' state")),
    ),
    "rng_shape_wrong": (
        _edit(lambda m: m["rng"]["torch"].update(shape=[3])),
        RESUME,
        Refusal(fragments=("trainer.json", "invalid rng entry 'torch'", "do not fill shape [3]")),
    ),
    "trainer_json_duplicate_key": (
        _duplicate_key,
        RESUME,
        Refusal(fragments=("trainer.json: invalid JSON", "duplicate key 'step'")),
    ),
    "safetensors_header_duplicate_key": (
        _duplicate_tensor,
        RESUME,
        Refusal(fragments=("model.safetensors", "duplicate key 'dense_0/bias'")),
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_checkpoint_inputs_are_refused(work: Path, case: str):
    setup, line, expected = CASES[case]
    setup(work)
    before = snapshot(work)
    expected.may_write = ()  # a refused command writes nothing, not even under runs/
    assert_refused(run_cli(line, work), expected, before, work)


def test_a_run_directory_in_use_is_refused_naming_the_pid(work: Path):
    fd = os.open(work / RUN / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        before = snapshot(work)
        done = run_cli(RESUME, work)
    finally:
        os.close(fd)
    expected = Refusal(
        fragments=(
            f"run directory {RUN} is in use by another crosstrain process (pid {os.getpid()})",
        ),
        may_write=(),
    )
    assert_refused(done, expected, before, work)


def test_a_finished_run_says_so_and_writes_nothing(work: Path):
    before = snapshot(work)
    done = run_cli(f"{FIT} --resume {CKPT}", work)
    assert done.returncode == 0, done.stderr
    assert f"nothing to train: {CKPT} is at step 12, epoch 2" in done.stdout
    assert changed_files(before, snapshot(work)) == set()


def test_resume_continues_in_the_same_run_directory_and_cleans_leftovers(work: Path):
    leftovers = [
        work / RUN / "checkpoints" / f".tmp-step-13-{'a' * 32}",
        work / RUN / "checkpoints" / f".old-step-6-{'b' * 32}",
    ]
    for path in leftovers:
        path.mkdir()
        (path / "trainer.json").write_text("{}")
    rows_before = (work / RUN / "metrics.csv").read_text().splitlines()
    done = run_cli(f"{FIT} --resume latest --max-epochs 3", work)
    assert done.returncode == 0, done.stderr
    assert f"resumed from {CKPT} (epoch 2, step 12)" in done.stdout
    assert "resume: trainer.max_epochs changed 2 -> 3" in done.stdout
    assert [p.name for p in (work / "runs" / "tiny").iterdir()] == [RUN.name]
    assert not any(path.exists() for path in leftovers)
    rows = (work / RUN / "metrics.csv").read_text().splitlines()
    assert rows[: len(rows_before)] == rows_before and len(rows) > len(rows_before)
    assert sum(row.startswith("epoch,step,stage") for row in rows) == 1
    assert rows[-1].startswith("2,18,epoch,")
    assert (work / CKPT.with_name("step-18") / "trainer.json").is_file()


def test_resume_changed_goes_on_and_lists_the_changes(work: Path):
    done = run_cli(f"{RESUME} --set seed=3 --resume-changed", work)
    assert done.returncode == 0, done.stderr
    assert "resume: seed changed 0 -> 3 (--resume-changed)" in done.stdout
    result = ct.fit(
        tiny_spec(seed=3, trainer={"max_epochs": 4, "progress": False}),
        backend="torch",
        resume=work / CKPT.with_name("step-18"),
        run_dir=False,
    )
    assert result.state.step == 24  # the stored spec is now the changed one: no flag needed


def test_new_run_directories_are_distinct_under_concurrency(tmp_path: Path):
    spec = load_spec(tiny_spec(trainer={"run_dir": str(tmp_path / "runs")}))
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(new_run_dir(spec))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == len(set(made)) == 16 and all(p.is_dir() for p in made)
