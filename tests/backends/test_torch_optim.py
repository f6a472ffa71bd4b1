"""torch optimizer updates, schedules and clipping equal `crosstrain.nn.optim.reference_step`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crosstrain.backends.torch.plugin import TorchBackend  # noqa: E402
from crosstrain.backends.torch.state import to_canonical, trainable  # noqa: E402
from crosstrain.nn.optim import DEFAULT_TOTAL_STEPS, reference_step  # noqa: E402
from crosstrain.plugin.protocol import RunEnv  # noqa: E402
from crosstrain.spec.schema import validate_spec  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6

LAYERS = [
    {"type": "Conv1D", "filters": 3, "kernel_size": 2, "padding": "same"},
    {"type": "Flatten"},
    {"type": "Dense", "units": 8, "activation": "tanh"},
    {"type": "Dense", "units": 3},
]

OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.1},
    "sgd_momentum": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "sgd_nesterov": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    "sgd_weight_decay": {"name": "sgd", "lr": 0.1, "momentum": 0.5, "weight_decay": 0.01},
    "adam": {"name": "adam", "lr": 0.01},
    "adam_l2": {
        "name": "adam",
        "lr": 0.01,
        "beta_1": 0.8,
        "beta_2": 0.99,
        "epsilon": 1e-6,
        "weight_decay": 0.05,
    },
    "adamw": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
    "rmsprop": {"name": "rmsprop", "lr": 0.01, "rho": 0.8},
    "rmsprop_momentum": {"name": "rmsprop", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.01},
    "adam_clip": {"name": "adam", "lr": 0.01, "clip_norm": 0.05},
    "sgd_clip": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "clip_norm": 0.01},
    "lion": {"name": "lion", "lr": 0.01, "weight_decay": 0.1},
    "adagrad": {"name": "adagrad", "lr": 0.1},
    "adadelta": {"name": "adadelta", "lr": 1.0, "weight_decay": 0.01},
    "adafactor": {"name": "adafactor", "lr": 0.1},
}
NATIVE = [k for k, v in OPTIMIZERS.items() if v["name"] in ("sgd", "adam", "adamw", "rmsprop")]


def make_program(
    optimizer: dict[str, Any], schedule: dict[str, Any] | None = None, total_steps: int = 10
) -> Any:
    data: dict[str, Any] = {
        "model": {"input_shape": [5, 2], "layers": LAYERS},
        "optimizer": optimizer,
        "seed": 3,
    }
    if schedule:
        data["schedule"] = schedule
    env = RunEnv(accelerator="cpu", seed=3, total_steps=total_steps)
    return TorchBackend().build(validate_spec(data), env)


def batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(8, 5, 2)).astype(np.float32), rng.integers(0, 3, size=8)


def canonical_grads(program: Any, data: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    program.optimizer.zero_grad(set_to_none=True)
    loss, _ = program._forward_loss(program._inputs(data[0]), program._targets(data[1]))
    loss.backward()
    grads = {r.name: to_canonical(r.tensor.grad, r.layout) for r in trainable(program.refs)}
    program.optimizer.zero_grad(set_to_none=True)
    return grads


def split_slots(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    slots: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        slot, _, name = key.partition("/")
        slots.setdefault(slot, {})[name] = value
    return slots


def check_steps(program: Any, steps: int = 3) -> None:
    opt = program.spec.optimizer
    for step in range(steps):
        before = program.get_state()
        data = batch(step)
        grads = canonical_grads(program, data)
        lr = program.schedule.lr(step)
        expected_params, expected_slots = reference_step(
            opt, before.params, grads, split_slots(before.optimizer), step, lr=lr
        )
        program.train_step(data)
        after = program.get_state()
        assert after.step == step + 1
        for name, value in expected_params.items():
            np.testing.assert_allclose(
                after.params[name], value, rtol=RTOL, atol=ATOL, err_msg=f"step {step} {name}"
            )
        assert split_slots(after.optimizer).keys() == expected_slots.keys()
        for slot, values in expected_slots.items():
            for name, value in values.items():
                np.testing.assert_allclose(
                    after.optimizer[f"{slot}/{name}"],
                    value,
                    rtol=RTOL,
                    atol=ATOL,
                    err_msg=f"{slot}/{name}",
                )


@pytest.mark.parametrize("key", sorted(OPTIMIZERS))
def test_updates_match_reference(key: str) -> None:
    check_steps(make_program(OPTIMIZERS[key]))


@pytest.mark.parametrize("key", sorted(NATIVE))
def test_rule_path_matches_reference(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The array-API rule on torch tensors, where `torch.optim` is the fast path."""
    from crosstrain.backends.torch import optim

    monkeypatch.setattr(optim, "NATIVE_FAST_PATHS", False)
    program = make_program(OPTIMIZERS[key])
    assert isinstance(program.optimizer, optim.RuleOptimizer)
    check_steps(program)


@pytest.mark.parametrize("native", [True, False])
def test_state_moves_between_native_and_rule_paths(native: bool, monkeypatch) -> None:
    """A state written by `torch.optim` resumes on the rule and back (the same canonical slots)."""
    from crosstrain.backends.torch import optim

    monkeypatch.setattr(optim, "NATIVE_FAST_PATHS", not native)
    spec = {"name": "adam", "lr": 0.01, "weight_decay": 0.01}
    first = make_program(spec)
    for step in range(2):
        first.train_step(batch(step))
    monkeypatch.setattr(optim, "NATIVE_FAST_PATHS", native)
    second = make_program(spec)
    second.set_state(first.get_state())
    assert isinstance(second.optimizer, optim.RuleOptimizer) is not native
    assert second.get_state().optimizer.keys() == first.get_state().optimizer.keys()
    for program in (first, second):
        program.train_step(batch(5))
    a, b = first.get_state(), second.get_state()
    assert a.step == b.step == 3
    for key in (*a.params, *a.optimizer):
        got = {**b.params, **b.optimizer}[key]
        np.testing.assert_allclose(got, {**a.params, **a.optimizer}[key], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "cosine", "warmup_steps": 2},
        {"name": "step", "step_size": 2, "gamma": 0.5},
        {"name": "linear", "end_ratio": 0.1},
    ],
)
def test_schedules_match_reference(schedule: dict[str, Any]) -> None:
    program = make_program({"name": "sgd", "lr": 0.1, "momentum": 0.9}, schedule, total_steps=4)
    check_steps(program, steps=4)
    assert program.optimizer.param_groups[0]["lr"] == pytest.approx(
        0.1 * program.spec.schedule.factor(3, 4)
    )


def test_clipping_really_clips() -> None:
    program = make_program({"name": "sgd", "lr": 1.0, "clip_norm": 1e-3})
    before = program.get_state().params
    program.train_step(batch(0))
    after = program.get_state().params
    change = np.sqrt(sum(float(np.sum((after[k] - before[k]) ** 2)) for k in before))
    assert change == pytest.approx(1e-3, rel=1e-3)


def test_default_total_steps_without_trainer() -> None:
    spec = validate_spec(
        {"model": {"input_shape": [5, 2], "layers": LAYERS}, "schedule": {"name": "cosine"}}
    )
    program = TorchBackend().build(spec, RunEnv(accelerator="cpu"))
    assert program.schedule.total_steps == DEFAULT_TOTAL_STEPS
