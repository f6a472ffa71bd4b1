"""`model.dropout_masks: shared`: torch, JAX and every Keras engine draw the same dropout masks,
so with dropout their losses agree step by step (with native masks they drift apart), under
gradient accumulation too, and a run resumed on another backend continues the same masks."""

from __future__ import annotations

from typing import Any

import crosstrain as ct
import numpy as np
import pytest
from conftest import ROOT, call_in_fresh_python, run_python
from crosstrain.checkpoint.format import latest_checkpoint, read_checkpoint
from crosstrain.nn.dropout import DROPOUT_CALLS, call_key, keep_mask

ROWS = 96


def _spec(masks: str, accumulate: int = 1, max_epochs: int = 3) -> dict[str, Any]:
    return {
        "seed": 5,
        "data": {"batch_size": 16, "shuffle": True, "validation_split": 0.0},
        "model": {
            "input_shape": [8],
            "dropout_masks": masks,
            "layers": [
                {"type": "Dense", "units": 32},
                {"type": "ReLU"},
                {"type": "Dropout", "rate": 0.5},
                {"type": "Dense", "units": 16},
                {"type": "Tanh"},
                {"type": "Dropout", "rate": 0.25},
                {"type": "Dense", "units": 3},
            ],
        },
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "trainer": {
            "max_epochs": max_epochs,
            "progress": False,
            "loggers": [],
            "checkpoint": None,
            "log_every_n_steps": 1,
            "accumulate_grad_batches": accumulate,
        },
    }


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(ROWS, 8)).astype(np.float32), rng.integers(0, 3, ROWS)


class StepLosses(ct.Callback):
    """The training loss of every step, in order."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_batch_end(self, trainer: Any, stage: str, logs: dict[str, float] | None) -> None:
        if stage == "train" and logs and "train_loss" in logs:
            self.losses.append(logs["train_loss"])


def step_losses(backend: str, masks: str, accumulate: int = 1) -> dict[str, Any]:
    """Per-step losses and the saved forward count of one fit (JSON-able; also run in a fresh
    interpreter for the Keras engines)."""
    losses = StepLosses()
    result = ct.fit(
        _spec(masks, accumulate), backend=backend, data=_data(), run_dir=False, callbacks=[losses]
    )
    calls = result.state.rng.get(DROPOUT_CALLS)
    return {"losses": losses.losses, "calls": None if calls is None else int(calls)}


def _keras(engine: str, masks: str, accumulate: int = 1) -> dict[str, Any]:
    return call_in_fresh_python(
        "test_dropout_masks", "step_losses", f"keras:{engine}", masks, accumulate
    )


def _largest_difference(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return float(np.max(np.abs(np.subtract(a, b)) / np.abs(b)))


def test_mask_keeps_the_right_fraction_and_calls_and_layers_are_independent() -> None:
    x = np.ones((1000, 1000), np.float32)
    first = keep_mask(np, x, call_key(np, 5, np.int32(0)), 11, 0.3)
    assert first.mean() == pytest.approx(0.7, abs=0.002)
    for other in (
        keep_mask(np, x, call_key(np, 5, np.int32(1)), 11, 0.3),  # next forward
        keep_mask(np, x, call_key(np, 5, np.int32(0)), 12, 0.3),  # another layer
        keep_mask(np, x, call_key(np, 6, np.int32(0)), 11, 0.3),  # another seed
    ):
        assert (first & other).mean() == pytest.approx(0.49, abs=0.002)  # 0.7 * 0.7
    rows = first.reshape(1000, 1000)
    assert (rows[:-1] & rows[1:]).mean() == pytest.approx(0.49, abs=0.002)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_torch_jax_and_keras_give_the_same_losses_with_shared_masks(accumulate: int) -> None:
    torch_run = step_losses("torch", "shared", accumulate)
    assert len(torch_run["losses"]) == 18 // accumulate
    assert torch_run["calls"] == 18  # one per forward: 6 batches x 3 epochs
    others = {"jax": step_losses("jax", "shared", accumulate)}
    others["keras:jax"] = _keras("jax", "shared", accumulate)
    if accumulate == 1:
        others["keras:tensorflow"] = _keras("tensorflow", "shared")
        others["keras:torch"] = _keras("torch", "shared")
    for backend, run in others.items():
        assert run["calls"] == 18, backend
        assert _largest_difference(run["losses"], torch_run["losses"]) < 1e-5, backend


def test_native_masks_drift_apart() -> None:
    """What `shared` is for: with each framework's own masks the losses differ by far more
    than float rounding."""
    torch_run, jax_run = step_losses("torch", "native"), step_losses("jax", "native")
    assert torch_run["calls"] is None
    assert _largest_difference(jax_run["losses"], torch_run["losses"]) > 1e-2


@pytest.mark.parametrize(("source", "target"), [("torch", "jax"), ("jax", "torch")])
def test_resume_on_another_backend_continues_the_same_masks(tmp_path, source, target) -> None:
    whole = StepLosses()
    spec = _spec("shared")
    ct.fit(spec, backend=source, data=_data(), run_dir=False, callbacks=[whole])
    first = _spec("shared", max_epochs=2)
    first["trainer"]["checkpoint"] = {"every_n_steps": 4}
    ct.fit(first, backend=source, data=_data(), run_dir=tmp_path / "first")
    checkpoint = latest_checkpoint(tmp_path / "first" / "checkpoints")
    saved, _ = read_checkpoint(checkpoint)
    assert saved.rng[DROPOUT_CALLS].item() == saved.step == 12
    continued = StepLosses()
    ct.fit(
        spec,
        backend=target,
        data=_data(),
        run_dir=tmp_path / "second",
        resume=checkpoint,
        resume_changed=True,
        callbacks=[continued],
    )
    assert len(continued.losses) == 6
    assert _largest_difference(continued.losses, whole.losses[12:]) < 1e-5


def test_masks_with_a_batch_axis_unknown_while_tracing() -> None:
    """A TensorFlow graph traced with an unknown batch size gets the same masks (Keras runs
    its tf.function steps so when batch sizes vary)."""
    code = (
        "import os\n"
        "os.environ['KERAS_BACKEND'] = 'tensorflow'\n"
        "import numpy as np, tensorflow as tf\n"
        "from crosstrain.backends.keras.xp import KERAS_OPS as xp\n"
        "from crosstrain.nn.dropout import call_key, keep_mask\n"
        "ref = keep_mask(np, np.ones((5, 8), np.float32), call_key(np, 3, np.int32(2)), 77, 0.4)\n"
        "traced = tf.function(\n"
        "    lambda x: keep_mask(xp, x, call_key(xp, 3, tf.constant(2, tf.int32)), 77, 0.4),\n"
        "    input_signature=[tf.TensorSpec([None, 8], tf.float32)],\n"
        ")\n"
        "print('equal', bool((traced(tf.ones((5, 8))).numpy() == ref).all()))\n"
    )
    done = run_python(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "equal True"
