"""Data parallel on torch.distributed (gloo, CPU): real torchrun workers against one process."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

import crosstrain as ct  # noqa: E402
from crosstrain.api import process_rank  # noqa: E402
from crosstrain.backends.torch.distributed import Shard, torchrun_command  # noqa: E402
from crosstrain.backends.torch.plugin import TorchBackend  # noqa: E402
from crosstrain.checkpoint.format import latest_checkpoint, read_checkpoint  # noqa: E402
from crosstrain.errors import CrosstrainError  # noqa: E402
from crosstrain.plugin.protocol import RunEnv  # noqa: E402

SPEC = {
    "name": "ddp-parity",
    "seed": 3,
    "data": {
        "source": "random:classification",
        "options": {"samples": 200, "features": 8, "classes": 3},
        "validation_split": 0.2,
        "batch_size": 25,
    },
    "model": {
        "input_shape": [8],
        "layers": [
            {"type": "Dense", "units": 16, "activation": "tanh"},
            {"type": "LayerNorm"},
            {"type": "Dense", "units": 3},
        ],
    },
    "loss": "cross_entropy",
    "metrics": ["accuracy"],
    "optimizer": {"name": "adam", "lr": 0.01, "clip_norm": 1.0},
    "schedule": {"name": "cosine", "warmup_steps": 2},
    "trainer": {
        "max_epochs": 2,
        "log_every_n_steps": 3,
        "progress": False,
        "accelerator": "cpu",
        "callbacks": ["grad_norm"],
    },
}


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_a_batch_once(world: int) -> None:
    for n in range(12):
        rows = [Shard(rank, world).rows(n) for rank in range(world)]
        assert [i for r in rows for i in range(n)[r]] == list(range(n))
        sizes = [r.stop - r.start for r in rows]
        assert max(sizes) - min(sizes) <= 1


def test_several_devices_without_a_launcher_explain_how(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    spec = ct.load_spec(SPEC).override({"trainer.devices": 2})
    for strategy in ("ddp", "auto"):
        env = RunEnv(accelerator="cpu", devices=2, strategy=strategy)
        with pytest.raises(CrosstrainError, match="torchrun"):
            TorchBackend().build(spec, env)
    assert TorchBackend().launch(ct.load_spec(SPEC), ["fit", "x"]) is None


def test_only_rank_zero_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    spec = ct.load_spec(SPEC)
    assert process_rank(spec) == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert process_rank(spec) == 0
    assert process_rank(spec.override({"trainer.strategy": "ddp"})) == 3
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert process_rank(spec) == 1


def test_torchrun_command_runs_the_cli() -> None:
    command = torchrun_command(2, ["fit", "spec.yaml", "--devices", "2"])
    assert command[:3] == [sys.executable, "-m", "crosstrain.backends.torch.torchrun"]
    assert "--nproc_per_node=2" in command
    assert command[-5:] == ["crosstrain.cli", "fit", "spec.yaml", "--devices", "2"]


def test_strategy_flag_sets_the_spec() -> None:
    from crosstrain.cli.main import build_parser, fit_overrides

    args = build_parser().parse_args(["fit", "s.yaml", "--strategy", "ddp", "--devices", "2"])
    changes = fit_overrides(args)
    assert yaml.safe_load(changes["trainer.strategy"]) == "ddp"
    assert changes["trainer.devices"] == 2


def epoch_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["stage"] == "epoch"]


def worker_env() -> dict[str, str]:
    """This environment without any launcher's variables, one OpenMP thread per worker."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "SLURM_PROCID",
        "CROSSTRAIN_DISTRIBUTED_WORKER",
    ):
        env.pop(name, None)
    return env


def run_workers(tmp_path: Path, *flags: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`crosstrain fit spec.yaml --devices 2 FLAGS` in `tmp_path`; the run directory it made."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    runs = tmp_path / "runs"
    env = worker_env()
    command = [sys.executable, "-m", "crosstrain.cli", "fit", str(spec_file)]
    command += ["--devices", "2", "--run-dir", str(runs), *flags]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("final metrics:") == 1
    run_dirs = sorted((runs / "ddp-parity").iterdir())
    return run_dirs[-1], done


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One two-process DDP run (strategy auto), shared by the DDP and FSDP parity tests."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    run_dir, _ = run_workers(tmp_path)
    assert len(list((tmp_path / "runs" / "ddp-parity").iterdir())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "spec.yaml"]
    return run_dir


def assert_same_state(state: ct.CanonicalState, expected: ct.CanonicalState) -> None:
    assert state.step == expected.step
    assert sorted(state.params) == sorted(expected.params)
    for name, value in expected.params.items():
        np.testing.assert_allclose(state.params[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert sorted(state.optimizer) == sorted(expected.optimizer)
    for name, value in expected.optimizer.items():
        np.testing.assert_allclose(state.optimizer[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_ddp_on_two_processes_equals_one_process_on_the_global_batch(ddp_run: Path) -> None:
    """`crosstrain fit --devices 2` (strategy auto: ddp) starts two gloo workers via torchrun.

    Batches of 25 split 13/12 between the ranks, so the loss weighting is exercised; only rank
    0 writes the run directory, and its checkpoint equals the single-process run's parameters.
    """
    state, meta = read_checkpoint(latest_checkpoint(ddp_run / "checkpoints"))
    single = ct.fit(ct.load_spec(SPEC), backend="torch", run_dir=False)
    assert state.step == single.state.step == meta["global_step"] == 14
    assert_same_state(state, single.state)
    rows = epoch_rows(ddp_run / "metrics.csv")
    assert len(rows) == len(single.history) == 2
    for row, expected in zip(rows, single.history, strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert float(row[key]) == pytest.approx(expected[key], rel=1e-5), key


def test_fsdp_equals_ddp_and_resumes_from_its_checkpoint(ddp_run: Path, tmp_path: Path) -> None:
    """FSDP2 (`fully_shard`, parameters and Adam slots sharded over 2 gloo ranks) trains to the
    DDP run's state; its checkpoint is the canonical single-device form (gathered from the
    shards), and a DDP checkpoint loads back into the shards to continue one more epoch."""
    ddp_checkpoint = latest_checkpoint(ddp_run / "checkpoints")
    ddp_state, _ = read_checkpoint(ddp_checkpoint)
    run_dir, _ = run_workers(tmp_path, "--strategy", "fsdp")
    state, meta = read_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    assert meta["global_step"] == 14
    assert_same_state(state, ddp_state)
    for fsdp_row, ddp_row in zip(
        epoch_rows(run_dir / "metrics.csv"), epoch_rows(ddp_run / "metrics.csv"), strict=True
    ):  # the gradient norm of sharded gradients equals DDP's
        assert float(fsdp_row["train_grad_norm"]) == pytest.approx(
            float(ddp_row["train_grad_norm"]), rel=1e-5
        )

    # a resume continues in the checkpoint's run directory: resume a copy of the shared DDP run
    copied_run = tmp_path / "ddp-copy" / ddp_run.name
    shutil.copytree(ddp_run, copied_run)
    copied_checkpoint = copied_run / "checkpoints" / ddp_checkpoint.name
    run_workers(
        tmp_path, "--strategy", "fsdp", "--max-epochs", "3", "--resume", str(copied_checkpoint)
    )
    resumed, _ = read_checkpoint(latest_checkpoint(copied_run / "checkpoints"))
    spec = ct.load_spec(SPEC).override({"trainer.max_epochs": 3})
    single = ct.fit(spec, backend="torch", run_dir=False, resume=ddp_checkpoint)
    assert resumed.step == single.state.step == 21
    assert_same_state(resumed, single.state)


USER_SCRIPT = """
import os
import sys
import crosstrain as ct

result = ct.fit(sys.argv[1], backend="torch", run_dir=sys.argv[2])
print(f"rank {os.environ['RANK']} finished at step {result.state.step}")
ct.end_worker()  # as docs/integrations.md asks: gloo may abort a finished rank at exit
"""


def test_a_script_under_the_users_own_torchrun_equals_the_cli_run(
    ddp_run: Path, tmp_path: Path
) -> None:
    """`torchrun --nproc_per_node 2 train.py` where train.py calls `crosstrain.fit`: the
    process group comes from torchrun's variables, nothing is launched twice, only rank 0
    writes, and the run ends at the state of `crosstrain fit --devices 2`."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    (tmp_path / "train.py").write_text(USER_SCRIPT, encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "train.py", "spec.yaml", "runs/mine"]
    done = subprocess.run(
        command, cwd=tmp_path, env=worker_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rank 0 finished at step 14" in done.stdout
    assert "rank 1 finished at step 14" in done.stdout
    assert done.stdout.count("final metrics:") == 0  # the Python API prints no report
    saved = {p.name for p in (tmp_path / "runs/mine/checkpoints").iterdir()}
    assert saved == {"step-7", "step-14"}  # one per epoch, written once
    state, _ = read_checkpoint(tmp_path / "runs/mine/checkpoints/step-14")
    ddp_state, _ = read_checkpoint(latest_checkpoint(ddp_run / "checkpoints"))
    assert_same_state(state, ddp_state)


def test_slurm_tasks_form_the_process_group(ddp_run: Path, tmp_path: Path) -> None:
    """Two processes started the way `srun --ntasks 2` starts them (SLURM_PROCID/NTASKS/LOCALID
    with MASTER_ADDR/MASTER_PORT from the job script, no torchrun): `crosstrain fit` joins them
    into one DDP run instead of launching, and rank 0 alone writes the DDP run's state."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", "--run-dir", "runs"]
    tasks = []
    for rank in (0, 1):
        env = worker_env() | {
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NTASKS": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        tasks.append(
            subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    outputs = [task.communicate(timeout=300)[0].decode() for task in tasks]
    for task, out in zip(tasks, outputs, strict=True):
        assert task.returncode == 0, out[-3000:]
    assert outputs[0].count("final metrics:") == 1 and "final metrics:" not in outputs[1]
    (run_dir,) = (tmp_path / "runs/ddp-parity").iterdir()
    state, _ = read_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    ddp_state, _ = read_checkpoint(latest_checkpoint(ddp_run / "checkpoints"))
    assert_same_state(state, ddp_state)


def test_compiled_fsdp_equals_ddp(ddp_run: Path, tmp_path: Path) -> None:
    """`trainer.compile: true` under FSDP2: the sharded model's forward and loss run
    through torch.compile and the run ends at the DDP run's state (rtol 1e-5)."""
    ddp_state, _ = read_checkpoint(latest_checkpoint(ddp_run / "checkpoints"))
    run_dir, _ = run_workers(tmp_path, "--strategy", "fsdp", "--set", "trainer.compile=true")
    state, meta = read_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    assert meta["global_step"] == 14
    assert_same_state(state, ddp_state)


@pytest.mark.parametrize(
    ("to_group", "signum", "status"),
    [(True, signal.SIGINT, 130), (False, signal.SIGTERM, 143), (False, signal.SIGKILL, -9)],
)
def test_a_signal_under_fsdp_stops_every_rank_at_one_step_and_saves(
    tmp_path: Path, to_group: bool, signum: int, status: int
) -> None:
    """Ctrl-C in a terminal signals the launcher's process group; `kill PID` only the launcher.
    Either way the launcher forwards it once to torchrun (a SIGKILLed launcher cannot: Linux
    sends torchrun SIGTERM as it dies, and the workers outlive it only long enough to save; the
    output pipe closes when the last one exits), the ranks agree at a metric pull,
    stop after the same step, gather the shards together and rank 0 writes one checkpoint;
    the exit status is 130 (SIGINT) or 143 (SIGTERM) and nothing hangs."""
    spec = {**SPEC, "trainer": {**SPEC["trainer"], "max_epochs": 100000, "log_every_n_steps": 2}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    env = worker_env()
    command = [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", "--devices", "2"]
    command += ["--strategy", "fsdp", "--run-dir", "runs"]
    worker = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("runs/*/*/checkpoints/step-*")):
            assert worker.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
        if to_group:
            os.killpg(worker.pid, signum)
        else:
            os.kill(worker.pid, signum)
        out, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert worker.returncode == status, out[-3000:]
    assert out.count("interrupted: saved") == 1, out[-3000:]
    saved = latest_checkpoint(next(tmp_path.glob("runs/*/*/checkpoints")))
    state, meta = read_checkpoint(saved)
    assert state.step == meta["global_step"] == int(saved.name.split("-")[1]) > 0
    assert sorted(state.params) == sorted(ct.fit(ct.load_spec(SPEC), run_dir=False).state.params)


def test_timer_stops_every_ddp_rank_after_the_same_step(tmp_path: Path) -> None:
    """Each rank reads its own clock; the `timer` callback decides at metric pulls through
    `program.any_rank`, so both ranks stop after one step and the run ends cleanly."""
    spec = {
        **SPEC,
        "trainer": {
            **SPEC["trainer"],
            "max_epochs": 100000,
            "log_every_n_steps": 2,
            "callbacks": [{"name": "timer", "max_time": 4}],
        },
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    env = worker_env()
    command = [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", "--devices", "2"]
    done = subprocess.run(
        [*command, "--run-dir", "runs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stopped early" in done.stdout
    saved = latest_checkpoint(next(tmp_path.glob("runs/*/*/checkpoints")))
    state, meta = read_checkpoint(saved)
    assert state.step == meta["global_step"] > 0
