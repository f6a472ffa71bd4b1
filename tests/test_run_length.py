"""The run length is computed once (`crosstrain.train.run_length`) and the lr schedule is written once
(`crosstrain.nn.optim`): the last step of a fit trains at the rate the schedule gives it, on every
backend, measured from what the parameters actually did."""

from __future__ import annotations

import math
from typing import Any

import crosstrain as ct
import numpy as np
import pytest
from conftest import EXAMPLES, call_in_fresh_python
from crosstrain.errors import SpecError
from crosstrain.nn.optim import DEFAULT_TOTAL_STEPS, HOST, applied_lr
from crosstrain.train.run_length import RunLength, run_length

ROWS, BATCH, EPOCHS, WEIGHT_DECAY = 70, 32, 3, 0.1
"""70 rows in batches of 32: 3 batches an epoch (the last of 6 rows), 2 with drop_last."""


@pytest.mark.parametrize(
    ("max_epochs", "max_steps", "per_epoch", "expected"),
    [
        (20, None, 23, RunLength(23, 460)),
        (20, 100, 23, RunLength(23, 100)),
        (2, 1000, 23, RunLength(23, 46)),  # the loop ends at max_epochs: so does the schedule
        (3, None, 0, RunLength(0, None)),  # a stream of unknown length
        (3, 50, 0, RunLength(0, 50)),
    ],
    ids=["epochs", "max_steps_first", "epochs_first", "unknown_stream", "unknown_stream_max_steps"],
)
def test_run_length_of_limits(max_epochs, max_steps, per_epoch, expected) -> None:
    assert RunLength.of(max_epochs, max_steps, per_epoch) == expected


@pytest.mark.parametrize(("drop_last", "per_epoch"), [(False, 3), (True, 2)])
def test_run_length_counts_the_partial_batch_unless_drop_last(drop_last, per_epoch) -> None:
    from crosstrain.data.arrays import ArrayData

    spec = ct.load_spec(_spec(drop_last=drop_last))
    train = ArrayData(np.zeros((ROWS, 4), np.float32), np.zeros(ROWS, np.int64))
    assert run_length(spec, train) == RunLength(per_epoch, per_epoch * EPOCHS)


def test_digits_example_length_counts_its_last_partial_batch() -> None:
    from crosstrain.spec.resolve import load_data

    spec = ct.load_spec(EXAMPLES / "digits_mlp.yaml")
    train, _ = load_data(spec)
    assert len(train) % spec.data.batch_size  # a partial last batch: ceil, not floor
    per_epoch = math.ceil(len(train) / spec.data.batch_size)
    assert run_length(spec, train) == RunLength(per_epoch, per_epoch * spec.trainer.max_epochs)


def _spec(**data: Any) -> dict[str, Any]:
    return {
        "seed": 1,
        "data": {"batch_size": BATCH, "shuffle": False, "validation_split": 0.0, **data},
        "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 3}]},
        "loss": "cross_entropy",
        "optimizer": {"name": "sgd", "lr": 0.5, "weight_decay": WEIGHT_DECAY},
        "schedule": {"name": "linear", "warmup_steps": 1},
        "trainer": {
            "max_epochs": EPOCHS,
            "progress": False,
            "loggers": [],
            "checkpoint": None,
            "log_every_n_steps": 1,
            "callbacks": ["lr_monitor"],
        },
    }


def measure_last_lr(backend: str) -> dict[str, float]:
    """Fits `_spec` with all-zero inputs, so the kernel's gradient is exactly zero and sgd's L2
    decay alone moves it: `kernel_after = kernel_before × (1 − lr × weight_decay)`. Returns the
    lr the last step applied (measured), the schedule's value for it, lr_monitor's and the step."""
    import crosstrain as ct  # also run in a fresh interpreter for Keras

    x = np.zeros((ROWS, 4), np.float32)
    y = (np.arange(ROWS) % 3).astype(np.int64)
    seen: dict[str, Any] = {}

    class BeforeLastStep(ct.Callback):
        def on_batch_end(self, trainer: Any, stage: str, logs: Any) -> None:
            if stage == "train" and trainer.global_step == trainer.total_steps - 1:
                seen["before"] = trainer.program.get_state().params["dense_0/kernel"].copy()
            if stage == "train" and logs and "lr" in logs:
                seen["monitor"] = logs["lr"]

    spec = ct.load_spec(_spec())
    result = ct.fit(spec, backend=backend, data=(x, y), run_dir=False, callbacks=[BeforeLastStep()])
    after = result.state.params["dense_0/kernel"]
    ratio = float(np.median(after / seen["before"]))
    steps = result.history[-1]["step"]
    return {
        "measured": (1.0 - ratio) / WEIGHT_DECAY,
        "schedule": applied_lr(spec.optimizer, spec.schedule, steps - 1, steps),
        "monitor": seen["monitor"],
        "steps": steps,
    }


def _check_last_lr(found: dict[str, float]) -> None:
    assert found["steps"] == 3 * EPOCHS  # ceil(70 / 32) batches an epoch
    # linear to 0 over the run (after 1 warmup step): the last update still has lr / 8
    assert found["schedule"] == pytest.approx(0.5 / 8)
    assert found["measured"] == pytest.approx(found["schedule"], rel=1e-4)
    assert found["monitor"] == pytest.approx(found["schedule"], rel=1e-6)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_last_step_trains_at_the_scheduled_lr(backend: str) -> None:
    _check_last_lr(measure_last_lr(backend))


def test_last_step_trains_at_the_scheduled_lr_on_keras() -> None:
    _check_last_lr(call_in_fresh_python("test_run_length", "measure_last_lr", "keras:jax"))


def test_digits_example_last_step_has_a_positive_lr() -> None:
    seen: list[dict[str, float]] = []

    class Pulls(ct.Callback):
        def on_batch_end(self, stage: str, logs: Any) -> None:
            if stage == "train" and logs:
                seen.append(logs)

    spec = ct.load_spec(EXAMPLES / "digits_mlp.yaml").override(
        {"trainer.callbacks": ["lr_monitor"], "trainer.progress": False, "trainer.loggers": []}
    )
    result = ct.fit(spec, backend="torch", run_dir=False, callbacks=[Pulls()])
    last_step = result.history[-1]["step"]
    assert last_step == 460  # 23 batches (the last partial) × 20 epochs
    expected = applied_lr(spec.optimizer, spec.schedule, last_step - 1, last_step)
    assert expected > 0
    assert seen[-1]["lr"] == pytest.approx(expected)
    assert result.metrics["val_accuracy"] > 0.9


# -- the schedule, written once -----------------------------------------------------------------

SCHEDULES = [
    {"name": "constant", "warmup_steps": 3},
    {"name": "linear_warmup", "warmup_steps": 4},
    {"name": "step", "step_size": 3, "gamma": 0.5, "warmup_steps": 2},
    {"name": "cosine", "warmup_steps": 2, "min_ratio": 0.1},
    {"name": "cosine", "decay_steps": 5},
    {"name": "linear", "end_ratio": 0.2, "warmup_steps": 1},
]


def _schedule(data: dict[str, Any]) -> Any:
    return ct.load_spec({"schedule": data}).schedule


@pytest.mark.parametrize("data", SCHEDULES, ids=lambda d: f"{d['name']}-{len(d)}")
def test_one_factor_on_every_namespace(data: dict[str, Any]) -> None:
    import array_api_compat.torch as torch_xp
    import jax.numpy as jnp
    import torch

    schedule = _schedule(data)
    for step in range(12):
        host = schedule.factor(step, 10)
        assert host == pytest.approx(float(schedule.factor_xp(HOST, step, 10)))
        assert float(schedule.factor_xp(np, np.asarray(step), 10)) == pytest.approx(host, rel=1e-6)
        assert float(schedule.factor_xp(jnp, jnp.asarray(step), 10)) == pytest.approx(
            host, rel=1e-6
        )
        on_torch = schedule.factor_xp(torch_xp, torch.tensor(step), 10)
        assert float(on_torch) == pytest.approx(host, rel=1e-6)


def test_jax_schedule_is_cores_definition() -> None:
    import jax.numpy as jnp
    from crosstrain.backends.jax.optim import schedule_factor

    schedule = _schedule({"name": "cosine", "warmup_steps": 2})
    factor = schedule_factor(schedule, None)  # unknown length: the one default
    for step in (0, 1, 2, 500_000, DEFAULT_TOTAL_STEPS):
        assert float(factor(jnp.asarray(step))) == pytest.approx(
            schedule.factor(step, DEFAULT_TOTAL_STEPS), abs=1e-6
        )


def test_an_unknown_schedule_is_an_error_not_a_factor_of_one() -> None:
    from crosstrain.backends.jax.optim import schedule_factor
    from crosstrain.backends.torch.optim import LrSchedule

    class Foreign:
        name = "exponential"
        warmup_steps = 0

    with pytest.raises(SpecError, match="schedule"):
        schedule_factor(Foreign(), 10)
    with pytest.raises(SpecError, match="schedule"):
        LrSchedule(None, 0.1, Foreign(), 10)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError):
        ct.optim._Schedule().factor(0, 10)
