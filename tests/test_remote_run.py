"""Run directories at fsspec URLs (memory://, file://) and async checkpoint saves: the commit
rule (temporary sibling, marker written last), resume from a remote run, and writer errors."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import crosstrain as ct
import fsspec
import numpy as np
import pytest
import yaml
from bad_inputs import Refusal, assert_refused, run_cli, snapshot
from crosstrain.checkpoint.remote import (
    COMMIT_MARKER,
    clean_remote,
    list_remote_checkpoints,
    upload_checkpoint,
)
from crosstrain.errors import CheckpointError

SPEC = {
    "name": "remote",
    "seed": 0,
    "data": {
        "source": "random:classification",
        "batch_size": 32,
        "options": {"samples": 256, "features": 8, "classes": 3},
    },
    "model": {"input_shape": [8], "layers": [{"type": "Dense", "units": 3}]},
    "loss": "cross_entropy",
    "optimizer": {"name": "adam", "lr": 0.01},
    "trainer": {"max_epochs": 2, "progress": False, "checkpoint": {"keep": 1}},
}


def _spec(**trainer):
    spec = ct.load_spec(SPEC)
    return spec.override({f"trainer.{k}": v for k, v in trainer.items()})


@pytest.mark.parametrize("async_save", [False, True])
def test_memory_run_dir_resumes_like_an_uninterrupted_run(async_save):
    root = f"memory://runs-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    spec = _spec(run_dir=root).override({"trainer.checkpoint.async": str(async_save).lower()})
    first = ct.fit(spec, backend="torch")
    assert isinstance(first.run_dir, str) and first.run_dir.startswith(
        f"{root.replace('://', ':///')}/remote/"
    )
    run = first.run_dir.split("://", 1)[1]
    assert first.last_checkpoint == f"{first.run_dir}/checkpoints/step-16"
    files = {p[len(run) + 1 :] for p in fs.find(run)}
    assert {
        "spec.yaml",
        "summary.txt",
        "metrics.csv",
        f"checkpoints/step-16/{COMMIT_MARKER}",
    } <= files
    assert not any(".tmp" in name for name in files)
    resumed = ct.fit(spec.override({"trainer.max_epochs": 4}), backend="torch", resume="latest")
    assert resumed.run_dir == first.run_dir  # goes on in the checkpoint's remote run
    assert [c.rsplit("/", 1)[1] for c in list_remote_checkpoints(fs, f"{run}/checkpoints")] == [
        "step-32"
    ]  # keep: 1, the resumed-from checkpoint included
    rows = fs.cat_file(f"{run}/metrics.csv").decode().splitlines()
    assert rows[0].startswith("epoch,step,stage") and sum(r.startswith("epoch") for r in rows) == 1
    straight = ct.fit(_spec(max_epochs=4), backend="torch", run_dir=False)
    for name, value in straight.state.params.items():
        np.testing.assert_array_equal(resumed.state.params[name], value)


def test_file_url_cli_fit_and_resume(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    url = f"file://{tmp_path}/remote-runs"
    done = run_cli(f"fit spec.yaml --run-dir {url} --set trainer.checkpoint.async=true", tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("run directory: "))
    run_url = line.split(": ", 1)[1]
    assert run_url.startswith(f"file://{tmp_path}/remote-runs/remote/")
    run = Path(run_url[len("file://") :])
    assert (run / "checkpoints/step-16" / COMMIT_MARKER).is_file()
    assert (run / "summary.txt").read_text().startswith('plan of "remote"')
    assert not (tmp_path / "runs").exists()
    done = run_cli(f"fit spec.yaml --resume {run_url} --max-epochs 3", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resume: trainer.max_epochs changed 2 -> 3" in done.stdout
    assert f"run directory: {run_url}" in done.stdout
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-24"]


def _local_checkpoint(tmp_path: Path, step: int) -> Path:
    from crosstrain.checkpoint.format import CanonicalState, write_checkpoint

    state = CanonicalState({"d/k": np.full((2, 2), step, np.float32)}, {}, step, {})
    return write_checkpoint(tmp_path / f"local-{step}", state, {"epoch": 0})


def test_commit_rule_on_memory_fs(tmp_path):
    fs = fsspec.filesystem("memory")
    root = f"/commit-{uuid.uuid4().hex[:8]}"
    upload_checkpoint(fs, _local_checkpoint(tmp_path, 3), root)
    # what interrupted uploads leave: a temporary, a step without its marker, a replaced step
    fs.pipe_file(f"{root}/.tmp-step-4-{'a' * 32}/model.safetensors", b"x")
    fs.pipe_file(f"{root}/step-5/trainer.json", b"{}")
    fs.mv(f"{root}/step-3", f"{root}/.replaced-step-3-{'b' * 32}", recursive=True)
    listed = list_remote_checkpoints(fs, root)
    assert listed == [f"{root}/.replaced-step-3-{'b' * 32}"]  # still counts as step 3
    clean_remote(fs, root)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(root, detail=False)) == ["step-3"]
    assert list_remote_checkpoints(fs, root) == [f"{root}/step-3"]
    upload_checkpoint(fs, _local_checkpoint(tmp_path, 3), root)  # a rewrite of the same step
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(root, detail=False)) == ["step-3"]


def test_async_writer_error_surfaces_on_the_loop_thread(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the checkpoints directory goes")
    spec = _spec().override({"trainer.checkpoint.async": "true"})
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        ct.fit(spec, backend="torch", run_dir=tmp_path)


def test_async_save_hooks_run_on_the_loop_thread(tmp_path):
    seen = []

    class Watch(ct.Callback):
        def on_checkpoint(self, trainer, stage, path):
            seen.append((threading.current_thread() is threading.main_thread(), path.is_dir()))

    spec = _spec(max_epochs=3).override({"trainer.checkpoint.async": "true"})
    result = ct.fit(spec, backend="torch", run_dir=tmp_path, callbacks=[Watch()])
    assert seen == [(True, True)] * 3  # each after its commit, on the loop thread
    assert result.last_checkpoint == tmp_path / "checkpoints" / "step-24"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-24"]


@pytest.mark.parametrize(
    "args, refusal",
    [
        pytest.param(
            "--run-dir foo://bucket/runs",
            Refusal(fragments=("trainer.run_dir 'foo://bucket/runs'", "unknown URL scheme 'foo'")),
            id="unknown-scheme",
        ),
        pytest.param(
            "--run-dir s3://bucket/runs",
            Refusal(fragments=("the filesystem for s3:// is not installed", "s3fs")),
            id="filesystem-not-installed",
            marks=pytest.mark.skipif(
                __import__("importlib").util.find_spec("s3fs") is not None, reason="s3fs is here"
            ),
        ),
        pytest.param(
            "--resume memory://nothing/here",
            Refusal(fragments=("memory://nothing/here", "no committed step-<N>/ checkpoint")),
            id="resume-nothing-there",
        ),
        pytest.param(
            "--resume latest --run-dir memory://empty",
            Refusal(fragments=("--resume latest: no committed checkpoint under memory:///empty",)),
            id="resume-latest-empty",
        ),
    ],
)
def test_bad_remote_inputs(tmp_path, args, refusal):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    before = snapshot(tmp_path)
    assert_refused(run_cli(f"fit spec.yaml {args}", tmp_path), refusal, before, tmp_path)
