"""Multi-process JAX (issue 17 items 2 and 3): `crosstrain fit SPEC --backend jax --devices 2`
on a CPU machine starts 2 processes joined by `jax.distributed` (gloo collectives), each with one
device of a global `data` mesh. The run equals one process on the global batch, and a
mid-epoch checkpoint resumes on the other number of processes to the same end state. The same
for keras:jax, whose processes share a `keras.distribution.DataParallel` over the global mesh."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("jax")

import crosstrain as ct  # noqa: E402
from crosstrain.checkpoint.format import read_checkpoint  # noqa: E402
from test_torch_distributed import assert_same_state, worker_env  # noqa: E402

SPEC = {
    "name": "jax-mp",
    "seed": 3,
    "data": {
        "source": "random:classification",
        "options": {"samples": 200, "features": 8, "classes": 3},
        "validation_split": 0.2,
        "batch_size": 20,
    },
    "model": {
        "input_shape": [8],
        "layers": [
            {"type": "Dense", "units": 16, "activation": "tanh"},
            {"type": "Dense", "units": 3},
        ],
    },
    "metrics": ["accuracy"],
    "optimizer": {"name": "adam", "lr": 0.01},
    "trainer": {
        "max_epochs": 2,
        "progress": False,
        "checkpoint": {"every_n_steps": 10, "keep": 10},
    },
}
"""160 training rows in batches of 20: 8 steps an epoch, 16 in all; step 10 is batch 2 of
epoch 1, checkpointed mid-epoch by `every_n_steps`."""
MID, LAST = 10, 16


def cli(args: list[str], cwd: Path, backend: str = "jax") -> subprocess.CompletedProcess[str]:
    env = worker_env()
    env.pop("XLA_FLAGS", None)  # one CPU device per process: the launcher must start two
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    command = [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", "--backend", backend]
    return subprocess.run(
        command + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoints of `fit --devices 2` (two jax processes)."""
    root = tmp_path_factory.mktemp("jax-mp")
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    done = cli(["--devices", "2", "--run-dir", "runs"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("final metrics:") == 1  # rank 1 prints nothing
    assert "[Gloo]" not in done.stdout  # gloo's connection lines, silenced unless -v
    (run,) = (root / "runs" / "jax-mp").iterdir()  # and writes nothing
    return run / "checkpoints"


def test_two_processes_equal_one_process_on_the_global_batch(two_process_run: Path, tmp_path):
    two, meta = read_checkpoint(two_process_run / f"step-{LAST}")
    assert meta["global_step"] == LAST
    one = ct.fit(SPEC, backend="jax", run_dir=tmp_path / "one")
    assert one.state.step == LAST
    assert_same_state(two, one.state)


def test_resume_two_processes_in_one_and_one_in_two(two_process_run: Path, tmp_path):
    expected, _ = read_checkpoint(two_process_run / f"step-{LAST}")
    _, meta = read_checkpoint(two_process_run / f"step-{MID}")
    assert (meta["epoch"], meta["batch_in_epoch"], meta["global_step"]) == (1, 2, MID)

    # 2 -> 1: one process goes on from the 2-process checkpoint in the middle of epoch 1
    resumed = ct.fit(SPEC, backend="jax", run_dir=False, resume=two_process_run / f"step-{MID}")
    assert_same_state(resumed.state, expected)

    # 1 -> 2: two processes go on from a 1-process checkpoint (alone in its run directory)
    one = ct.fit(SPEC, backend="jax", run_dir=tmp_path / "one")
    start = tmp_path / "runs" / "jax-mp" / "from-one" / "checkpoints" / f"step-{MID}"
    shutil.copytree(one.run_dir / "checkpoints" / f"step-{MID}", start)
    shutil.copy(one.run_dir / "spec.yaml", start.parent.parent / "spec.yaml")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    done = cli(["--devices", "2", "--resume", str(start)], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resumed from {start} (epoch 1, step {MID})" in done.stdout
    two_from_one, _ = read_checkpoint(start.parent / f"step-{LAST}")
    assert_same_state(two_from_one, one.state)
    assert_same_state(two_from_one, expected)


def test_a_worker_error_is_printed_once_and_nothing_forks_jax(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    done = cli(["--devices", "2", "--resume", "nowhere/step-3"], tmp_path)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: nowhere/step-3: not a checkpoint (no trainer.json) and no "
        "step-<N>/ checkpoint inside"
    ], done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "os.fork()" not in done.stderr


def test_keras_jax_on_two_processes_equals_one_and_resumes_from_one(tmp_path):
    """keras:jax `--devices 2`: two processes, rank 0 alone writes checkpoints (read from the
    compiled state, no collective), equal to one process; a 1-process checkpoint resumes in
    two processes mid-epoch (every process assigns the loaded state) to the same end."""
    pytest.importorskip("keras")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    done = cli(["--devices", "2", "--run-dir", "two"], tmp_path, "keras:jax")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("final metrics:") == 1
    assert "[Gloo]" not in done.stdout
    (two_run,) = (tmp_path / "two" / "jax-mp").iterdir()
    done = cli(["--run-dir", "one"], tmp_path, "keras:jax")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (one_run,) = (tmp_path / "one" / "jax-mp").iterdir()
    two, _ = read_checkpoint(two_run / "checkpoints" / f"step-{LAST}")
    one, meta = read_checkpoint(one_run / "checkpoints" / f"step-{LAST}")
    assert meta["backend"] == "keras:jax"
    assert_same_state(two, one)

    start = tmp_path / "from-one" / "jax-mp" / "run" / "checkpoints" / f"step-{MID}"
    shutil.copytree(one_run / "checkpoints" / f"step-{MID}", start)
    shutil.copy(one_run / "spec.yaml", start.parent.parent / "spec.yaml")
    done = cli(["--devices", "2", "--resume", str(start)], tmp_path, "keras:jax")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resumed from {start} (epoch 1, step {MID})" in done.stdout
    two_from_one, _ = read_checkpoint(start.parent / f"step-{LAST}")
    assert_same_state(two_from_one, one)
