"""Checkpoints written by real torch fits: format and retention, save errors on a full or
read-only disk, the NaN guard, clean failure from callbacks, no leaks, export to torch."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import resource
import signal
import subprocess
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import crosstrain as ct
import numpy as np
import pytest
from conftest import tiny_spec
from crosstrain.checkpoint.format import (
    CanonicalState,
    check_tensor_file,
    list_checkpoints,
    read_checkpoint,
)
from crosstrain.errors import CheckpointError, PluginHookError, TrainingError

TEMPORARY = (".tmp-", ".old-", ".replaced-")


def _spec(**trainer: object) -> dict:
    return tiny_spec(
        trainer={"max_epochs": 2, "progress": False, "log_every_n_steps": 2, **trainer}
    )


def test_default_fit_checkpoints_every_epoch_keeps_last_three_and_the_best(tmp_path):
    spec = _spec(max_epochs=6, checkpoint={"monitor": "val_loss", "mode": "max"})
    spec["model"]["layers"].insert(2, {"type": "Dropout", "rate": 0.2})
    result = ct.fit(spec, backend="torch", run_dir=tmp_path / "run")
    worst = max(result.history, key=lambda h: h["val_loss"])
    kept = [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")]
    assert kept[-3:] == ["step-24", "step-30", "step-36"]
    assert f"step-{worst['step']}" in kept and len(kept) == 3 + (worst["step"] < 24)
    state, meta = read_checkpoint(tmp_path / "run" / "checkpoints" / "step-36")
    for name in ("model.safetensors", "optimizer.safetensors"):
        data = (tmp_path / "run" / "checkpoints" / "step-36" / name).read_bytes()
        assert meta["files"][name] == hashlib.sha256(data).hexdigest()
        check_tensor_file(tmp_path / "run" / "checkpoints" / "step-36" / name)
    assert meta["format_version"] == 2 and meta["backend"] == "torch"
    assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (36, 6, 0)
    assert meta["data_order_seed"] == 0 and len(meta["history"]) == 6
    assert meta["spec"]["model"]["layers"][2]["type"] == "Dropout"
    assert {"crosstrain", "torch"} <= set(meta["versions"])
    assert state.rng["torch"].dtype == np.uint8 and state.rng["torch"].size > 100
    best = meta["callbacks"]["ModelCheckpoint"]
    assert best["best_value"] == worst["val_loss"] and best["best_path"].endswith(
        f"step-{worst['step']}"
    )


@contextlib.contextmanager
def _mounted(path: Path, *options: str) -> Iterator[bool]:
    """Mounts at `path` as root (tmpfs or bind); yields False where mounting is not possible."""
    path.mkdir(parents=True, exist_ok=True)
    done = (
        os.geteuid() == 0
        and subprocess.run(["mount", *options, path], capture_output=True).returncode == 0
    )
    try:
        yield done
    finally:
        if done:
            subprocess.run(["umount", "-l", path], check=False)


class _AfterFirstSave(ct.Callback):
    def __init__(self, action):
        self.action, self.done = action, False

    def on_checkpoint(self, trainer, stage, path):
        if stage == "save" and not self.done:
            self.done = True
            self.action(trainer.checkpoint_dir)


def _fill(directory: Path) -> None:
    with (directory.parent / "filler").open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
            os.fsync(out.fileno())


def _check_save_error(err: CheckpointError, run: Path, cause: str) -> None:
    assert str(run / "checkpoints" / "step-12") in str(err) and cause in str(err), str(err)
    found = list_checkpoints(run / "checkpoints")
    assert [p.name for p in found] == ["step-6"]
    read_checkpoint(found[0])
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(TEMPORARY)]


def test_a_full_disk_stops_the_fit_naming_path_and_cause(tmp_path):
    with _mounted(tmp_path / "fs", "-t", "tmpfs", "-o", "size=2m", "tmpfs") as mounted:
        run = tmp_path / "fs" / "run"
        if mounted:
            action, cause = _fill, "No space left on device"
        else:  # no tmpfs without root: a file size limit fails writes with EFBIG instead
            old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            limits = resource.getrlimit(resource.RLIMIT_FSIZE)
            action, cause = (
                (lambda d: resource.setrlimit(resource.RLIMIT_FSIZE, (512, limits[1]))),
                "File too large",
            )
        try:
            with pytest.raises(CheckpointError) as info:
                ct.fit(
                    _spec(max_epochs=3, loggers=[]),
                    backend="torch",
                    run_dir=run,
                    callbacks=[_AfterFirstSave(action)],
                )
        finally:
            if not mounted:
                resource.setrlimit(resource.RLIMIT_FSIZE, limits)
                signal.signal(signal.SIGXFSZ, old)
        (tmp_path / "fs" / "filler").unlink(missing_ok=True)
        _check_save_error(info.value, run, cause)


def test_a_read_only_directory_stops_the_fit_naming_path_and_cause(tmp_path):
    run = tmp_path / "run"
    mounts: list[contextlib.ExitStack] = []

    def read_only(directory: Path) -> None:
        stack = contextlib.ExitStack()
        mounts.append(stack)
        if stack.enter_context(_mounted(directory, "--bind", str(directory))):
            subprocess.run(["mount", "-o", "remount,bind,ro", directory], check=True)
        else:
            directory.chmod(0o555)

    try:
        with pytest.raises(CheckpointError) as info:
            ct.fit(
                _spec(max_epochs=3),
                backend="torch",
                run_dir=run,
                callbacks=[_AfterFirstSave(read_only)],
            )
        cause = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
        _check_save_error(info.value, run, cause)
    finally:
        for stack in mounts:
            stack.close()
        (run / "checkpoints").chmod(0o755)


class _Poison(ct.Callback):
    """Makes the parameters NaN at a chosen point, as a diverging update would."""

    def __init__(self, when: str):
        self.when = when

    def _poison(self, trainer):
        state = trainer.program.get_state()
        params = {k: np.full_like(v, np.nan) for k, v in state.params.items()}
        trainer.program.set_state(CanonicalState(params, state.optimizer, state.step, state.rng))

    def on_epoch_start(self, trainer, stage, epoch):
        if self.when == "epoch" and stage == "train" and epoch == 1:
            self._poison(trainer)

    def on_batch_end(self, trainer, stage, batch_index, logs):
        if self.when == "last_batch" and stage == "train" and logs and trainer.global_step == 12:
            self._poison(trainer)


def test_nan_guard_names_step_and_last_good_checkpoint_and_writes_no_poison(tmp_path):
    with pytest.raises(
        TrainingError, match=r"loss became nan at step 8 .*last good checkpoint is .*step-6"
    ):
        ct.fit(
            _spec(max_epochs=3),
            backend="torch",
            run_dir=tmp_path / "a",
            callbacks=[_Poison("epoch")],
        )
    assert [p.name for p in list_checkpoints(tmp_path / "a" / "checkpoints")] == ["step-6"]
    with pytest.raises(
        TrainingError, match=r"parameter dense_0/kernel is not finite at step 12.*not writing"
    ):
        ct.fit(
            _spec(max_epochs=3),
            backend="torch",
            run_dir=tmp_path / "b",
            callbacks=[_Poison("last_batch")],
        )
    assert [p.name for p in list_checkpoints(tmp_path / "b" / "checkpoints")] == ["step-6"]
    result = ct.fit(
        _spec(max_epochs=2, detect_anomaly=False),
        backend="torch",
        run_dir=False,
        callbacks=[_Poison("epoch")],
    )
    assert np.isnan(result.metrics["train_loss"])


class _Raise(ct.Callback):
    def __init__(self, hook: str, error: BaseException):
        self.hook, self.error, self.raised = hook, error, False

    def _maybe(self, hook: str, trainer) -> None:
        if hook == self.hook and not self.raised and trainer.epoch == 1:
            self.raised = True
            raise self.error

    def on_fit_start(self, trainer):
        if self.hook == "on_fit_start":
            self.raised = True
            raise self.error

    def on_epoch_start(self, trainer):
        self._maybe("on_epoch_start", trainer)

    def on_batch_end(self, trainer):
        self._maybe("on_batch_end", trainer)

    def on_epoch_end(self, trainer):
        self._maybe("on_epoch_end", trainer)

    def on_checkpoint(self, trainer):
        self._maybe("on_checkpoint", trainer)


class _Count(ct.Callback):
    def __init__(self):
        self.seen: list[BaseException] = []

    def on_exception(self, exception):
        self.seen.append(exception)


class _Broken(ct.Callback):
    def on_exception(self, exception):
        raise RuntimeError("a plugin's own bug")


@pytest.mark.parametrize(
    "hook", ["on_fit_start", "on_epoch_start", "on_batch_end", "on_epoch_end", "on_checkpoint"]
)
@pytest.mark.parametrize("error_type", [ValueError, KeyboardInterrupt], ids=["error", "ctrl-c"])
def test_a_callback_error_is_reported_after_each_on_exception(tmp_path, hook, error_type):
    """Ctrl-C propagates unchanged; a plugin's own exception becomes a PluginHookError naming
    the plugin and the hook, chained to the original. Either way every on_exception ran first
    and the checkpoints left behind are complete."""
    error = error_type("user bug")
    first, last = _Count(), _Count()
    expected = KeyboardInterrupt if error_type is KeyboardInterrupt else PluginHookError
    with pytest.warns(UserWarning, match="a plugin's own bug"), pytest.raises(expected) as info:
        ct.fit(
            _spec(max_epochs=2),
            backend="torch",
            run_dir=tmp_path / "run",
            callbacks=[first, _Broken(), _Raise(hook, error), last],
        )
    if expected is PluginHookError:
        assert info.value.__cause__ is error
        assert f"plugin _Raise hook {hook}: ValueError: user bug" in str(info.value)
    else:
        assert info.value is error
    assert first.seen == [info.value] and last.seen == [info.value]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (
        not [p for p in checkpoints.iterdir() if p.name.startswith(TEMPORARY)]
        if checkpoints.exists()
        else True
    )
    for path in list_checkpoints(checkpoints):
        read_checkpoint(path)
    assert ct.fit(_spec(max_epochs=1), backend="torch", run_dir=False).history


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _children() -> int:
    me = str(os.getpid())
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                count += stat.read().rsplit(")", 1)[1].split()[1] == me
    return count


def test_twenty_fits_leave_fds_threads_children_and_memory_at_baseline(tmp_path):
    spec = _spec(max_epochs=1)
    spec["data"]["options"]["samples"] = 64

    def one(i: int) -> None:
        ct.fit(spec, backend="torch", run_dir=tmp_path / f"run-{i}")

    for i in range(2):
        one(i)
    gc.collect()
    baseline = (
        _open_fds(),
        threading.active_count(),
        len(os.listdir("/proc/self/task")),
        _children(),
    )
    tracemalloc.start()
    try:
        one(2)
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        for i in range(3, 20):
            one(i)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    after = (_open_fds(), threading.active_count(), len(os.listdir("/proc/self/task")), _children())
    assert after == baseline
    assert growth < 512 * 1024, f"host memory grew by {growth} bytes over 17 fits"


def test_export_to_torch_loads_strictly_and_predicts_the_same(tmp_path):
    import torch
    from crosstrain.backends.torch.model import build_module
    from crosstrain.cli.main import main
    from safetensors.torch import load_file

    spec = _spec(max_epochs=1)
    result = ct.fit(spec, backend="torch", run_dir=tmp_path / "run")
    out = tmp_path / "model.safetensors"
    assert main(["export", str(result.last_checkpoint), "--to", "torch", "--output", str(out)]) == 0
    module, _ = build_module(ct.load_spec(spec).model, torch.device("cpu"), torch.float32)
    module.load_state_dict(load_file(out), strict=True)
    x = np.random.default_rng(1).standard_normal((7, 8)).astype(np.float32)
    expected = ct.predict(spec, result.last_checkpoint, x, backend="torch")
    with torch.no_grad():
        np.testing.assert_allclose(
            module.eval()(torch.from_numpy(x)).numpy(), expected, rtol=0, atol=1e-6
        )


def test_on_nan_skip_undoes_and_counts_the_bad_steps(tmp_path):
    """NaN in the data itself is refused when it is loaded; a NaN loss from finite data (an
    overflow) is what on_nan=skip is for."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((192, 8)).astype(np.float32), rng.integers(0, 3, 192)
    x[5] = np.finfo(np.float32).max  # finite data whose forward pass overflows to inf - inf
    val = (x[6:70], y[6:70])
    spec = _spec(max_epochs=3, on_nan="skip")
    result = ct.fit(spec, backend="torch", data=(x, y), val_data=val, run_dir=tmp_path / "run")
    assert result.extras["skipped_steps"] == 3 and result.state.step == 18 - 3
    assert all(np.isfinite(v).all() for v in result.state.params.values())
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
    assert read_checkpoint(result.last_checkpoint)[1]["skipped_steps"] == 3
    with pytest.raises(TrainingError, match="loss became nan"):
        ct.fit(_spec(max_epochs=1), backend="torch", data=(x, y), val_data=val, run_dir=False)


class _DoubleCtrlC(ct.Callback):
    def on_batch_end(self, trainer, stage):
        if stage == "train" and trainer.global_step == 8:
            os.kill(os.getpid(), signal.SIGINT)
            assert trainer.interrupted == "SIGINT"
            os.kill(os.getpid(), signal.SIGINT)


def test_a_second_ctrl_c_aborts_at_once_without_a_checkpoint(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs in the background
    with pytest.raises(KeyboardInterrupt):
        ct.fit(
            _spec(max_epochs=3),
            backend="torch",
            run_dir=tmp_path / "run",
            callbacks=[_DoubleCtrlC()],
        )
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-6"]
    assert signal.getsignal(signal.SIGINT) is before  # the fit put the handler back
