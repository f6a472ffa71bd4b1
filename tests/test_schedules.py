"""Schedules in a registry (`crosstrain.nn.schedules`): each class says whether it needs the run
length, so an unsized stream refuses the ones that do instead of decaying over 1,000,000 steps;
plugins add schedules by registration or `package.module:Class`."""

from __future__ import annotations

import json
from typing import Any, Literal

import crosstrain as ct
import numpy as np
import pytest
from conftest import tiny_spec
from crosstrain.checkpoint.format import latest_checkpoint, read_checkpoint
from crosstrain.data.batches import Batches, check_streams
from crosstrain.errors import DataError, SpecError
from crosstrain.nn.schedules import Schedule


class _Stream:
    """Batches without `len()`."""

    def __iter__(self) -> Any:
        return iter(())


@pytest.mark.parametrize(
    ("schedule", "refused"),
    [
        ({"name": "exponential"}, True),
        ({"name": "exponential", "decay_steps": 100}, False),
        ({"name": "cosine"}, True),
        ({"name": "cosine", "decay_steps": 100}, False),
        ({"name": "linear"}, True),
        ({"name": "step", "step_size": 10}, False),
        ({"name": "constant", "warmup_steps": 5}, False),
    ],
)
def test_an_unsized_stream_refuses_schedules_that_need_the_run_length(schedule, refused):
    spec = ct.load_spec({"schedule": schedule})
    assert spec.schedule.needs_run_length() is refused
    train = Batches(_Stream())
    if refused:
        with pytest.raises(DataError, match=f"'{schedule['name']}' schedule cannot know"):
            check_streams(spec, train, None, None)
    else:
        check_streams(spec, train, None, None)
    check_streams(spec.override({"trainer.max_steps": 10}), train, None, None)


def test_exponential_decays_over_its_decay_steps():
    exp = ct.load_spec({"schedule": {"name": "exponential", "end_ratio": 0.01, "decay_steps": 4}})
    factors = [exp.schedule.factor(step, None) for step in (0, 2, 4, 8)]
    assert factors == pytest.approx([1.0, 0.1, 0.01, 0.01])


class Halving(Schedule):
    """Half the lr after `after` updates."""

    name: Literal["test_halving"] = "test_halving"
    after: int = 3

    def _after_warmup(self, xp: Any, t: Any, steps: int) -> Any:
        return xp.where(t < self.after, xp.ones_like(t), 0.5 * xp.ones_like(t))


def test_a_plugin_schedule_by_registration_and_reference():
    ct.register_schedule(Halving)
    spec = ct.load_spec({"schedule": {"name": "test_halving", "after": 2}})
    assert [spec.schedule.factor(s, None) for s in (0, 1, 2, 5)] == [1.0, 1.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="already registered"):
        ct.register_schedule("test_halving", Halving)
    with pytest.raises(SpecError, match="unknown schedule 'cosin'; did you mean 'cosine'"):
        ct.load_spec({"schedule": "cosin"})
    by_reference = ct.load_spec({"schedule": {"name": "crosstrain.nn.schedules:Cosine"}})
    assert by_reference.schedule.name == "cosine"


class _Program:
    def __init__(self):
        self.scales: list[float] = []

    def set_lr_scale(self, scale: float) -> None:
        self.scales.append(scale)


class _Trainer:
    def __init__(self):
        self.program = _Program()


def test_reduce_on_plateau_follows_keras_rule():
    """Keras's ReduceLROnPlateau on the same val_loss sequence: patience 2, cooldown 1."""
    from crosstrain.plugins.plateau import ReduceLROnPlateau

    schedule = ct.load_spec(
        {
            "schedule": {
                "name": "reduce_on_plateau",
                "factor": 0.5,
                "patience": 2,
                "cooldown": 1,
                "min_lr": 0.02,
                "min_delta": 0.0,
            }
        }
    ).schedule
    callback, trainer = ReduceLROnPlateau(schedule, base_lr=0.1), _Trainer()
    callback.on_fit_start(trainer)
    lrs = []
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.95, 0.97, 0.99, 0.99, 0.99, 0.99, 0.99]):
        callback.on_epoch_end(trainer, "train", epoch, {"val_loss": loss})
        lrs.append(round(0.1 * callback.scale, 6))
    # 2-3 wait, reduce at 3; 4 ends the cooldown and waits (Keras), reduce at 5, and at 7 to
    # min_lr; at 9 the lr is min_lr already
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02]
    assert trainer.program.scales == pytest.approx([1.0, 0.5, 0.25, 0.2])
    restored = ReduceLROnPlateau(schedule, base_lr=0.1)
    restored.load_state_dict(json.loads(json.dumps(callback.state_dict())))
    assert restored.state_dict() == callback.state_dict()


class _Params(ct.Callback):
    def __init__(self):
        self.params: list[dict[str, Any]] = []

    def on_epoch_end(self, trainer, stage):
        if stage == "train":
            self.params.append(trainer.program.get_state().params)


@pytest.mark.parametrize("backend", ["torch", "jax", "keras"])
def test_reduce_on_plateau_lowers_the_lr_on_every_backend(backend, tmp_path):
    """min_delta 100: only the first epoch improves; the second reduces the lr by 1e-6, so the
    third barely moves the weights; the multiplier is in the checkpoint."""
    pytest.importorskip(backend.split(":")[-1])
    spec = tiny_spec(
        schedule={"name": "reduce_on_plateau", "factor": 1e-6, "patience": 1, "min_delta": 100},
        trainer={"max_epochs": 3, "progress": False, "callbacks": ["lr_monitor"]},
    )
    seen = _Params()
    result = ct.fit(spec, backend=backend, run_dir=tmp_path, callbacks=[seen])
    lrs = [row["lr"] for row in result.history]  # lr_monitor sees the multiplier too
    assert lrs[0] == pytest.approx(spec["optimizer"]["lr"]) and lrs[2] < 1e-7, lrs
    p1, p2, p3 = seen.params
    moved = [sum(float(np.abs(b[k] - a[k]).sum()) for k in a) for a, b in ((p1, p2), (p2, p3))]
    assert moved[1] < 1e-3 * moved[0], moved
    checkpoint = latest_checkpoint(next(tmp_path.rglob("checkpoints")))
    _, meta = read_checkpoint(checkpoint)
    assert meta["callbacks"]["ReduceLROnPlateau"]["scale"] == pytest.approx(1e-12)


def test_a_backend_without_lr_scale_refuses_reduce_on_plateau():
    from crosstrain.plugin.capabilities import Capabilities

    spec = ct.load_spec({"schedule": "reduce_on_plateau"})
    with pytest.raises(ct.UnsupportedFeature, match="reduce_on_plateau"):
        Capabilities(layers=frozenset()).check(spec, "numpy")
