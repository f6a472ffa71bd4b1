"""Schedules in a registry (`crosstrain.nn.schedules`): each class says whether it needs the run
length, so an unsized stream refuses the ones that do instead of decaying over 1,000,000 steps;
plugins add schedules by registration or `package.module:Class`."""

from __future__ import annotations

from typing import Any, Literal

import crosstrain as ct
import pytest
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
