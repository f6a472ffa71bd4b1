"""Exact resume (mid-epoch, dropout, schedule, early stopping), resume across frameworks,
real SIGINT/SIGTERM sent to `crosstrain fit`, and export to flax and keras."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import crosstrain as ct
import numpy as np
import pytest
from conftest import tiny_spec
from crosstrain.checkpoint.checks import record_digest
from crosstrain.checkpoint.format import latest_checkpoint, list_checkpoints, read_checkpoint
from crosstrain.errors import CheckpointError
from crosstrain.plugin.registry import get_registry
from crosstrain.plugins.early_stopping import EarlyStopping
from crosstrain.spec.schema import EarlyStoppingSpec


def available(backend: str) -> bool:
    return get_registry().backend(backend).is_available()[0]


def needs(backend: str):
    return pytest.mark.skipif(not available(backend), reason=f"{backend} is not installed")


BACKENDS = [pytest.param(b, marks=needs(b)) for b in ("torch", "jax", "keras")]


def _spec(dropout: float = 0.3, **trainer: object) -> dict:
    spec = tiny_spec(
        schedule={"name": "cosine", "warmup_steps": 3},
        trainer={"max_epochs": 3, "progress": False, "log_every_n_steps": 1, **trainer},
    )
    if dropout:
        spec["model"]["layers"].insert(2, {"type": "Dropout", "rate": dropout})
    return spec


class _StopAt(ct.Callback):
    """Sends this process SIGINT after `step`: the trainer stops there and checkpoints."""

    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, trainer, stage):
        if stage == "train" and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class _Losses(ct.Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_batch_end(self, trainer, stage, logs):
        if stage == "train" and logs:
            self.losses[trainer.global_step] = logs["train_loss"]


def _early_stopping() -> EarlyStopping:
    return EarlyStopping(EarlyStoppingSpec(monitor="val_loss", patience=100))


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_is_bit_identical(tmp_path, backend):
    spec = _spec()
    full_stop = _early_stopping()
    full = ct.fit(spec, backend=backend, run_dir=tmp_path / "full", callbacks=[full_stop])
    with pytest.raises(KeyboardInterrupt):
        ct.fit(
            spec,
            backend=backend,
            run_dir=tmp_path / "cut",
            callbacks=[_StopAt(8), _early_stopping()],
        )
    cut = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    meta = read_checkpoint(cut)[1]
    assert (cut.name, meta["epoch"], meta["batch_in_epoch"]) == ("step-8", 1, 2)
    resumed_stop = _early_stopping()
    resumed = ct.fit(
        spec, backend=backend, run_dir=tmp_path / "resumed", resume=cut, callbacks=[resumed_stop]
    )
    assert resumed.state.step == full.state.step == 18
    for group in ("params", "optimizer"):
        expected, got = getattr(full.state, group), getattr(resumed.state, group)
        assert expected.keys() == got.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{group} {name}")
    assert resumed_stop.state_dict() == full_stop.state_dict()
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    final = [
        read_checkpoint(latest_checkpoint(tmp_path / d / "checkpoints"))[1]
        for d in ("full", "resumed")
    ]
    assert final[0]["callbacks"]["EarlyStopping"] == final[1]["callbacks"]["EarlyStopping"]
    best = [meta["callbacks"]["ModelCheckpoint"] for meta in final]
    assert best[0]["best_value"] == best[1]["best_value"]
    assert best[0]["best_path"].rsplit("/", 1)[1] == best[1]["best_path"].rsplit("/", 1)[1]


CROSS = [
    pytest.param(a, b, marks=[needs(a), needs(b)])
    for a, b in (("torch", "jax"), ("torch", "keras"), ("jax", "torch"))
]


@pytest.mark.parametrize(("source", "target"), CROSS)
def test_resume_on_another_backend_loads_state_exactly_and_continues(tmp_path, source, target):
    spec = _spec(dropout=0, max_epochs=2)
    reference = _Losses()
    ct.fit(spec, backend=source, run_dir=False, callbacks=[reference])
    with pytest.raises(KeyboardInterrupt):
        ct.fit(spec, backend=source, run_dir=tmp_path / "cut", callbacks=[_StopAt(5)])
    cut = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    saved, _ = read_checkpoint(cut)
    program = ct.build(spec, backend=target)
    program.set_state(saved)
    loaded = program.get_state()
    assert loaded.step == saved.step == 5
    for group in ("params", "optimizer"):
        for name, value in getattr(saved, group).items():
            np.testing.assert_array_equal(getattr(loaded, group)[name], value, err_msg=name)
    continued = _Losses()
    ct.fit(spec, backend=target, run_dir=tmp_path / "resumed", resume=cut, callbacks=[continued])
    assert sorted(continued.losses) == list(range(6, 13))
    for step, loss in continued.losses.items():
        assert loss == pytest.approx(reference.losses[step], rel=0.01), step


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_incompatible_spec_is_refused_naming_the_parameter_and_shapes(tmp_path, backend):
    spec = _spec(dropout=0, max_epochs=1)
    first = ct.fit(spec, backend="torch", run_dir=tmp_path / "run")
    wider = _spec(dropout=0, max_epochs=1)
    wider["model"]["layers"][0]["units"] = 32
    with pytest.raises(
        CheckpointError,
        match=r"dense_0/(kernel has shape \(8, 16\) in the checkpoint and \(8, 32\)"
        r"|bias has shape \(16,\) in the checkpoint and \(32,\))",
    ):
        ct.fit(wider, backend=backend, run_dir=False, resume=first.last_checkpoint)


def test_a_stored_spec_naming_code_is_data_only_on_resume(tmp_path):
    first = ct.fit(_spec(dropout=0, max_epochs=1), backend="torch", run_dir=tmp_path / "run")
    meta_path = first.last_checkpoint / "trainer.json"
    meta = json.loads(meta_path.read_text())
    meta["spec"]["loss"] = {"name": "os:system", "options": {"command": f"touch {tmp_path / 'x'}"}}
    meta["spec"]["metrics"] = [{"name": "ct_never_imported_module:fn"}]
    del meta["digest"]
    meta_path.write_text(json.dumps({**meta, "digest": record_digest(meta)}))
    result = ct.fit(
        _spec(dropout=0, max_epochs=2),
        backend="torch",
        run_dir=False,
        resume=first.last_checkpoint,
        resume_changed=True,  # the stored loss and metrics differ from this spec's
    )
    assert len(result.history) == 2 and not (tmp_path / "x").exists()
    assert "ct_never_imported_module" not in sys.modules


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_to_the_cli_checkpoint_and_resume_latest_continues(tmp_path, signum, code):
    spec = _spec(dropout=0, max_epochs=100000, log_every_n_steps=50)
    spec["data"]["options"]["samples"] = 2048
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    command = [
        sys.executable,
        "-m",
        "crosstrain.cli",
        "fit",
        "spec.json",
        "--backend",
        "torch",
        "--run-dir",
        "runs",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def checkpoints():
        runs = (tmp_path / "runs" / "tiny").glob("*")
        return [c for run in runs for c in list_checkpoints(run / "checkpoints")]

    for _ in range(1200):
        if checkpoints() or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "interrupted: saved" in out and ("terminated" if code == 143 else "interrupted") in err
    latest = max(checkpoints(), key=lambda p: int(p.name.split("-")[1]))
    _, meta = read_checkpoint(latest)
    assert meta["global_step"] > 48 and meta["step"] == meta["global_step"]
    if signum == signal.SIGINT:
        return
    epochs = meta["epoch"] + 1
    resume = subprocess.run(
        [*command, "--resume", "latest", "--set", f"trainer.max_epochs={epochs}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resume.returncode == 0, resume.stderr
    done = max(checkpoints(), key=lambda p: int(p.name.split("-")[1]))
    assert read_checkpoint(done)[1]["global_step"] == epochs * 48
    history = read_checkpoint(done)[1]["history"]
    assert history[-1]["epoch"] == epochs - 1


@pytest.mark.parametrize(
    "target",
    [pytest.param("flax", marks=needs("jax")), pytest.param("keras", marks=needs("keras"))],
)
def test_export_to_flax_and_keras_predicts_the_same(tmp_path, target):
    from crosstrain.cli.export import export

    if target == "flax":
        from crosstrain.backends.jax.export import load_flax_state

    spec = _spec(dropout=0, max_epochs=1)
    result = ct.fit(spec, backend="torch", run_dir=tmp_path / "run")
    x = np.random.default_rng(1).standard_normal((7, 8)).astype(np.float32)
    expected = ct.predict(spec, result.last_checkpoint, x, backend="torch")
    out = export(result.last_checkpoint, target, tmp_path / f"model.{target}")
    if target == "flax":
        model = ct.build(spec, backend="jax").native_model
        load_flax_state(model, out)
        got = np.asarray(model(x))
    else:
        import keras

        out = out.rename(out.with_suffix(".keras"))
        got = np.asarray(keras.saving.load_model(out).predict(x, verbose=0))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
