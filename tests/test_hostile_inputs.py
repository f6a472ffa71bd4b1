"""Issue 25: hostile inputs and faults where crosstrain lost data, was silently wrong, printed a
traceback instead of one `error:` line, or misled. One test (or table row) per item; the
table with before/after is docs/hostile-inputs.md.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import crosstrain as ct
import numpy as np
import pytest
from conftest import tiny_spec
from crosstrain.errors import CheckpointError

KILL_SCRIPT = """
import os, signal, sys
import crosstrain as ct

class Kill(ct.Callback):
    def on_batch_end(self, trainer, stage, logs):
        if stage == "train" and trainer.global_step == 9:
            os.kill(os.getpid(), getattr(signal, sys.argv[2]))

spec = {spec}
ct.fit(spec, backend="torch", run_dir=sys.argv[1], callbacks=[Kill()])
"""


def _steps(path: Path) -> list[tuple[str, int]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["stage"], int(row["step"])) for row in csv.DictReader(handle)]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_metrics_csv_keeps_every_logged_row_through_a_kill_and_a_resume(tmp_path: Path, sig: str):
    spec = tiny_spec(
        trainer={
            "max_epochs": 2,
            "progress": False,
            "log_every_n_steps": 1,
            "checkpoint": {"every_n_steps": 4},
        }
    )
    script = tmp_path / "fit.py"
    script.write_text(KILL_SCRIPT.format(spec=repr(spec)))
    run = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, str(script), str(run), sig], capture_output=True, text=True
    )
    assert killed.returncode != 0 and (sig == "SIGKILL" or "Terminated" in killed.stderr)
    rows = _steps(run / "metrics.csv")
    steps = [step for stage, step in rows if stage == "step"]
    assert steps[:8] == list(range(1, 9))  # rows of the killed epoch (6 steps an epoch) kept
    ct.fit(spec, backend="torch", run_dir=run, resume=run)
    rows = _steps(run / "metrics.csv")
    assert [step for stage, step in rows if stage == "step"] == list(range(1, 13))
    assert [step for stage, step in rows if stage == "epoch"] == [6, 12]


def test_latest_is_the_newest_checkpoint_and_skips_a_junk_one(tmp_path: Path, capsys):
    from crosstrain.spec.schema import load_spec
    from crosstrain.train.rundir import find_checkpoint

    runs = tmp_path / "runs"
    long = tiny_spec(trainer={"max_epochs": 2, "progress": False, "run_dir": str(runs)})
    short = tiny_spec(trainer={"max_epochs": 1, "progress": False, "run_dir": str(runs)})
    ct.fit(long, backend="torch", run_dir=runs / "tiny" / "a-long")
    ct.fit(short, backend="torch", run_dir=runs / "tiny" / "b-short")
    junk = runs / "tiny" / "c-junk" / "checkpoints" / "step-9999"
    junk.mkdir(parents=True)
    (junk / "trainer.json").write_text("{}")
    spec = load_spec(short)
    assert find_checkpoint(spec, "latest") == runs / "tiny" / "b-short" / "checkpoints" / "step-6"
    assert f"warning: skipping unreadable checkpoint: {junk}" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        find_checkpoint(spec, junk.parent.parent)
    result = ct.fit(
        tiny_spec(trainer={"max_epochs": 2, "progress": False, "run_dir": str(runs)}),
        backend="torch",
        resume="latest",
        run_dir=False,
    )
    assert result.state.step == 12


def test_an_explicit_null_survives_overrides_and_the_command_line(tmp_path: Path):
    from bad_inputs import run_cli
    from crosstrain.spec.schema import load_spec

    spec = load_spec(tiny_spec(trainer={"max_epochs": 1, "checkpoint": None}))
    assert spec.override({"trainer.max_epochs": 2}).trainer.checkpoint is None
    assert load_spec(spec.to_dict()).trainer.checkpoint is None
    assert load_spec(tiny_spec()).override({}).trainer.checkpoint is not None  # default kept
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    done = run_cli("config spec.json --set trainer.max_epochs=2 --run-dir out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "checkpoint: null" in done.stdout


def test_set_a_new_optimizer_or_schedule_name_starts_that_mapping_afresh(tmp_path: Path):
    from bad_inputs import run_cli
    from crosstrain.spec.schema import load_spec

    spec = load_spec(tiny_spec(schedule={"name": "cosine", "warmup_steps": 2}))
    changed = spec.override({"optimizer.momentum": "0.9", "optimizer.name": "sgd"})
    assert changed.optimizer.name == "sgd" and changed.optimizer.momentum == 0.9
    assert spec.override({"schedule.name": "step"}).schedule.name == "step"
    assert spec.override({"optimizer.name": "adam"}).optimizer == spec.optimizer  # same name
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    done = run_cli("config spec.json --set optimizer.name=sgd schedule.name=linear", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "name: sgd" in done.stdout and "beta_1" not in done.stdout


def test_module_with_its_own_loss_and_a_mixin_callback_hook():
    class Tiny(ct.Module):
        input_shape = (8,)

        def layers(self):
            return [{"type": "Dense", "units": 3}]

        def loss(self, xp, logits, targets):
            return ct.losses.cross_entropy(xp, logits, targets)

        def data(self):
            return tiny_spec()["data"]

    spec = Tiny().to_spec().override({"trainer.max_epochs": 1, "trainer.progress": False})
    assert spec.loss.name == "Tiny.loss" and spec.loss.fn is not None

    seen = []

    class Counting:
        def on_epoch_end(self, stage, metrics):
            seen.append(stage)

    class Counter(Counting, ct.Callback):
        pass

    ct.fit(spec, backend="torch", run_dir=False, callbacks=[Counter()])
    assert "train" in seen
    assert not hasattr(Counting.on_epoch_end, "crosstrain_impl")  # the mixin is left alone


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_every_streamed_batch_is_label_checked(backend: str):
    torch = pytest.importorskip("torch")
    from crosstrain.errors import DataError
    from torch.utils.data import DataLoader, TensorDataset

    spec = tiny_spec(trainer={"max_epochs": 1, "progress": False, "loggers": []})
    spec["data"] = {"validation_split": 0.0}
    x = torch.zeros((96, 8))
    y = torch.arange(96) % 3
    y[70] = 100  # batch 2 (of 32 rows): torch raised IndexError, XLA clamped it silently
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    with pytest.raises(DataError, match=r"^data, batch 2: label 100 in row 6 .* 3 units"):
        ct.fit(spec, backend=backend, data=loader, run_dir=False)


def test_streamed_label_check_costs_microseconds_a_batch():
    import time

    from crosstrain.data.targets import target_checker
    from crosstrain.spec.schema import load_spec

    check = target_checker(load_spec(tiny_spec()))
    labels = np.arange(256) % 3
    started = time.perf_counter()
    for _ in range(1000):
        check(labels, "data, batch 0")
    assert (
        time.perf_counter() - started
    ) / 1000 < 1e-3  # measured 20-50 µs a batch of 256 (numpy, CPU torch)


def test_a_loader_of_three_tuples_is_refused_not_half_used():
    from crosstrain.errors import DataError

    spec = tiny_spec(trainer={"max_epochs": 1, "progress": False, "loggers": []})
    spec["data"] = {"validation_split": 0.0}
    x, y, w = np.zeros((32, 8), np.float32), np.arange(32) % 3, np.ones(32, np.float32)
    batches = [(x, y, w), (x, y, w)]
    with pytest.raises(DataError, match=r"batch 0 is a tuple of 3 items; expected \(x, y\)"):
        ct.fit(spec, backend="torch", data=batches, run_dir=False)


def test_a_csv_with_a_bom_reads_its_first_column_by_name(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = "".join(f"{i % 5},{i % 3},{i % 3}\n" for i in range(40))
    (tmp_path / "bom.csv").write_text("a,b,y\n" + rows, encoding="utf-8-sig")
    spec = tiny_spec(
        data={"source": "csv:bom.csv", "options": {"columns": ["a", "b"]}},
        trainer={"max_epochs": 1, "progress": False, "loggers": []},
    )
    spec["model"]["input_shape"] = [2]
    assert ct.fit(spec, backend="torch", run_dir=False).history


def test_a_tensor_that_requires_grad_is_data():
    torch = pytest.importorskip("torch")
    spec = tiny_spec(trainer={"max_epochs": 1, "progress": False, "loggers": []})
    x = torch.zeros((64, 8), requires_grad=True)
    assert ct.fit(spec, backend="torch", data=(x, torch.arange(64) % 3), run_dir=False).history


def test_big_endian_arrays_train_on_jax(tmp_path: Path, monkeypatch):
    pytest.importorskip("jax")
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(">f4")
    np.savez(tmp_path / "be.npz", x=x, y=(np.arange(64) % 3).astype(">i8"))
    spec = tiny_spec(
        data={"source": "npz:be.npz"}, trainer={"max_epochs": 1, "progress": False, "loggers": []}
    )
    assert ct.fit(spec, backend="jax", run_dir=False).history


def test_resume_on_a_read_only_run_directory_is_one_line(tmp_path: Path):
    import os
    import subprocess as sp

    from bad_inputs import Refusal, assert_refused, run_cli, snapshot

    spec = tiny_spec(trainer={"max_epochs": 1, "progress": False})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    run = tmp_path / "runs" / "tiny" / "20000101-000000"
    ct.fit(spec, backend="torch", run_dir=run)
    mounted = (
        os.geteuid() == 0
        and sp.run(["mount", "--bind", run, run], capture_output=True).returncode == 0
    )
    try:
        if mounted:
            sp.run(["mount", "-o", "remount,bind,ro", run], check=True)
        else:
            run.chmod(0o555)
        before = snapshot(tmp_path)
        done = run_cli("fit spec.json --backend torch --max-epochs 2 --resume latest", tmp_path)
        cause = "Read-only file system" if mounted else "Permission denied"
        expected = Refusal(
            code=2, fragments=(f"cannot use run directory {run.relative_to(tmp_path)}: {cause}",)
        )
        assert_refused(done, expected, before, tmp_path)
    finally:
        if mounted:
            sp.run(["umount", "-l", run], check=False)
        run.chmod(0o755)


def test_an_endless_generator_is_bounded_by_max_steps_or_warned_about():
    import itertools

    x, y = np.zeros((16, 8), np.float32), np.arange(16) % 3
    spec = tiny_spec(trainer={"max_steps": 3, "progress": False, "loggers": []})  # max_epochs 10
    spec["data"] = {}
    result = ct.fit(spec, backend="torch", data=itertools.repeat((x, y)), run_dir=False)
    assert result.state.step == 3
    spec["trainer"] = {"max_epochs": 1, "progress": False, "loggers": []}
    with pytest.warns(UserWarning, match="an iterator of unknown length .* set trainer.max_steps"):
        ct.fit(spec, backend="torch", data=iter([(x, y)] * 2), run_dir=False)


def test_an_empty_streamed_batch_says_so_not_nan():
    from crosstrain.errors import DataError

    spec = tiny_spec(trainer={"max_epochs": 1, "progress": False, "loggers": []})
    spec["data"] = {}
    x, y = np.zeros((16, 8), np.float32), np.arange(16) % 3
    batches = [(x, y), (x[:0], y[:0])]
    with pytest.raises(DataError, match=r"^data, batch 1 has 0 rows"):
        ct.fit(spec, backend="torch", data=batches, run_dir=False)


def test_no_training_batch_names_the_validation_split_not_drop_last(tmp_path: Path):
    from crosstrain.errors import TrainingError

    spec = tiny_spec(trainer={"max_epochs": 1, "progress": False, "loggers": []})
    x, y = np.zeros((1, 8), np.float32), np.array([1])
    with pytest.raises(TrainingError, match=r"0 samples \(after data.validation_split 0.25\)$"):
        ct.fit(spec, backend="torch", data=(x, y), run_dir=False)


def test_a_missing_accelerator_is_refused_before_the_summary_table(tmp_path: Path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has cuda")
    from bad_inputs import run_cli

    (tmp_path / "spec.json").write_text(json.dumps(tiny_spec()))
    done = run_cli("fit spec.json --backend torch --accelerator cuda", tmp_path)
    assert done.returncode == 2, done.stderr
    assert "error: accelerator 'cuda' not found by backend 'torch'" in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_export_renames_a_complete_file_into_place(tmp_path: Path):
    from crosstrain.cli.export import export

    result = ct.fit(
        tiny_spec(trainer={"max_epochs": 1, "progress": False, "loggers": []}),
        backend="torch",
        run_dir=tmp_path / "run",
    )
    out = tmp_path / "out"
    out.mkdir()
    first = export(result.last_checkpoint, "torch", out / "model.pt")
    inode = first.stat().st_ino
    again = export(result.last_checkpoint, "torch", out / "model.pt")
    assert again == out / "model.pt" and again.stat().st_ino != inode  # renamed over, not rewritten
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]  # no staging left behind


def test_more_cpu_devices_than_cores_is_warned_about(caplog):
    import logging
    import os

    from crosstrain.cli.fit import warn_more_devices_than_cores
    from crosstrain.plugin.registry import get_registry
    from crosstrain.spec.schema import load_spec

    cores = os.cpu_count() or 1
    torch_backend = get_registry().backend("torch")
    log = logging.getLogger("crosstrain")
    log.addHandler(caplog.handler)  # whatever an earlier in-process CLI did to propagation
    level, log.level = log.level, logging.WARNING
    try:
        spec = load_spec(tiny_spec(trainer={"devices": cores + 2, "accelerator": "cpu"}))
        warn_more_devices_than_cores(spec, torch_backend)
        expected = f"trainer.devices is {cores + 2} on the CPU but this machine has {cores} cores"
        assert expected in caplog.text
        caplog.clear()
        warn_more_devices_than_cores(spec.override({"trainer.devices": cores}), torch_backend)
        assert caplog.text == ""
    finally:
        log.removeHandler(caplog.handler)
        log.setLevel(level)
