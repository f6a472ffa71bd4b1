"""`--launcher ray`: real Ray (a local cluster started on demand, 2 CPU workers through Ray
Train's TorchTrainer, gloo), against the single-process run that torchrun's DDP equals
(tests/backends/test_torch_distributed.py), and a worker killed mid-run.

Each test starts its own local Ray (about 10 s) and a worker group (about 15 s): they are
marked slow; measured on the 2-core machine: parity ~35 s, kill and restart ~60 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

import crosstrain as ct  # noqa: E402
from bad_inputs import Refusal, assert_refused, run_cli, snapshot  # noqa: E402
from crosstrain.checkpoint.format import latest_checkpoint, read_checkpoint  # noqa: E402
from test_torch_distributed import SPEC, assert_same_state, worker_env  # noqa: E402

RAY = ["--launcher", "ray", "--devices", "2", "--run-dir", "runs"]


def ray_fit(tmp_path: Path, spec: dict, *flags: str, timeout: float = 300) -> subprocess.Popen:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    command = [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", *RAY, *flags]
    return subprocess.Popen(
        command,
        cwd=tmp_path,
        env=worker_env() | {"RAY_AUTH_MODE": "disabled"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_ray_workers_train_like_torchrun(tmp_path: Path) -> None:
    """Two Ray Train workers (DDP over gloo, 13/12 rows of each batch of 25) end at the state of
    one process on the global batch, which is what torchrun's two workers end at (rtol 1e-5);
    rank 0 alone wrote the run directory, and the CLI reports from its last checkpoint."""
    out = finish(ray_fit(tmp_path, SPEC))
    (run_dir,) = (tmp_path / "runs" / "ddp-parity").iterdir()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-14", "step-7"]
    state, meta = read_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    single = ct.fit(ct.load_spec(SPEC), backend="torch", run_dir=False)
    assert state.step == single.state.step == meta["global_step"] == 14
    assert_same_state(state, single.state)
    assert f"run directory: {run_dir}" in out and out.count("final metrics:") == 1
    val_loss = float(out.split("val_loss")[1].split()[0])
    assert val_loss == pytest.approx(single.metrics["val_loss"], rel=1e-5)


def ray_workers(root: psutil.Process) -> list[psutil.Process]:
    """The Ray Train worker processes started under `root` (their title names the actor)."""
    found = []
    for child in root.children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_a_killed_worker_is_restarted_from_the_latest_checkpoint(tmp_path: Path) -> None:
    """SIGKILL one of the two workers after the first checkpoint: Ray (`--max-failures 1`)
    starts a new worker group, which resumes from the run directory's latest checkpoint and
    finishes the run; the final checkpoint is readable and equals the uninterrupted run."""
    spec = {
        **SPEC,
        "data": {**SPEC["data"], "options": {"samples": 3000, "features": 8, "classes": 3}},
        "trainer": {**SPEC["trainer"], "max_epochs": 12, "callbacks": []},
    }
    process = ray_fit(tmp_path, spec, "--max-failures", "1")
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("runs/*/*/checkpoints/step-*/trainer.json")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.1)
    workers = ray_workers(psutil.Process(process.pid))
    assert len(workers) == 2, [w.cmdline() for w in workers]
    max(workers, key=lambda w: w.pid).send_signal(signal.SIGKILL)
    out = finish(process)
    assert "resumed from" in out, out[-4000:]
    (run_dir,) = (tmp_path / "runs" / "ddp-parity").iterdir()
    last = latest_checkpoint(run_dir / "checkpoints")
    state, meta = read_checkpoint(last)
    assert meta["epoch"] == 12 and meta["global_step"] == state.step == 12 * 96
    assert [h["epoch"] for h in meta["history"]] == list(range(12))
    single = ct.fit(ct.load_spec(spec), backend="torch", run_dir=False)
    assert_same_state(state, single.state)
    assert json.loads((last / "trainer.json").read_text())["digest"]


def _ray_blocked(cwd: Path) -> dict[str, str]:
    """A `ray` package on PYTHONPATH that fails to import, as a broken or absent install does."""
    (cwd / "blocked" / "ray").mkdir(parents=True)
    (cwd / "blocked" / "ray" / "__init__.py").write_text(
        "raise ImportError('No module named ray')\n"
    )
    return {"PYTHONPATH": str(cwd / "blocked")}


FIT = "fit spec.yaml --no-progress --devices 2"

CASES = [
    pytest.param(
        f"{FIT} --launcher ray",
        _ray_blocked,
        Refusal(
            fragments=("launcher 'ray' needs the 'ray' package", "pip install 'crosstrain[ray]'")
        ),
        id="ray_missing",
    ),
    pytest.param(
        f"{FIT} --launcher ray --ray-address nowhere",
        None,
        Refusal(fragments=("--ray-address 'nowhere': expected HOST:PORT",)),
        id="address_without_port",
    ),
    pytest.param(
        f"{FIT} --launcher ray --ray-address 127.0.0.1:9",
        None,
        Refusal(fragments=("--ray-address 127.0.0.1:9: no Ray cluster answers there",)),
        id="address_nobody_listens",
    ),
    pytest.param(
        f"{FIT} --ray-address 127.0.0.1:6379",
        None,
        Refusal(fragments=("--ray-address needs --launcher ray",)),
        id="address_without_launcher",
    ),
    pytest.param(
        f"{FIT} --launcher rey",
        None,
        Refusal(fragments=("unknown launcher 'rey'", "did you mean 'ray'")),
        id="unknown_launcher",
    ),
    pytest.param(
        f"{FIT} --launcher ray --backend keras:tensorflow",
        None,
        Refusal(fragments=("launcher 'ray'", "--backend torch", "--backend keras:jax")),
        id="backend_not_launched_by_ray",
    ),
]


@pytest.mark.parametrize(("line", "prepare", "expected"), CASES)
def test_refused(line: str, prepare, expected: Refusal, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    env = prepare(tmp_path) if prepare else {}
    before = snapshot(tmp_path)
    done = run_cli(line, tmp_path, env=env, timeout=120)
    assert_refused(done, expected, before, tmp_path)


def test_fit_refuses_a_launcher_without_a_run_directory() -> None:
    with pytest.raises(ct.CrosstrainError, match="needs a run directory"):
        ct.fit(ct.load_spec(SPEC), launcher="ray", run_dir=False)


RAY_JAX_BACKENDS = os.environ.get("CROSSTRAIN_TEST_RAY_JAX", "jax").split(",")
"""The suite runs jax; keras:jax takes the same Ray path (its multi-process training is tested
in test_jax_multiprocess.py) and ~50 s more: `CROSSTRAIN_TEST_RAY_JAX=jax,keras:jax` adds it."""


@pytest.mark.slow
@pytest.mark.parametrize("backend", RAY_JAX_BACKENDS)
def test_ray_jax_workers_equal_one_process(tmp_path: Path, backend: str) -> None:
    """jax and keras:jax in two Ray Train workers (`JaxTrainer`; on CPU the workers join
    through `jax.distributed` at a coordinator rank 0 broadcasts) end at the state of one
    process on the global batch (rtol 1e-5)."""
    pytest.importorskip("jax")
    if backend == "keras:jax":
        pytest.importorskip("keras")
    from test_jax_multiprocess import LAST
    from test_jax_multiprocess import SPEC as JAX_SPEC
    from test_jax_multiprocess import cli as jax_cli

    out = finish(ray_fit(tmp_path, JAX_SPEC, "--backend", backend))
    assert out.count("final metrics:") == 1
    (run_dir,) = (tmp_path / "runs" / "jax-mp").iterdir()
    state, meta = read_checkpoint(run_dir / "checkpoints" / f"step-{LAST}")
    assert meta["backend"] == backend
    done = jax_cli(["--run-dir", "single"], tmp_path, backend)  # one process, its own engine
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (single_dir,) = (tmp_path / "single" / "jax-mp").iterdir()
    single, _ = read_checkpoint(single_dir / "checkpoints" / f"step-{LAST}")
    assert_same_state(state, single)
