"""Optimizers written once (`crosstrain.nn.optimizers`): the numpy reference of the rules that
are Keras's equals `keras.optimizers` of the same name step by step, hand computations pin the
others, the registry takes plugin optimizers (`register_optimizer`, `package.module:Class`),
and a checkpoint of a factored optimizer (adafactor) moves between backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import crosstrain as ct
import numpy as np
import pytest
from crosstrain.errors import SpecError
from crosstrain.nn.optimizers import Optimizer, reference_step

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/plugins/crosstrain-rmsnorm/src"

KERAS_CASES = {
    "lion": ({"lr": 0.01, "weight_decay": 0.1}, "Lion(learning_rate=0.01, weight_decay=0.1)"),
    "adagrad": ({"lr": 0.1}, "Adagrad(learning_rate=0.1)"),
    "adadelta": ({"lr": 1.0, "rho": 0.9}, "Adadelta(learning_rate=1.0, rho=0.9)"),
    "adafactor": ({"lr": 0.1}, "Adafactor(learning_rate=0.1)"),
}
KERAS_STEPS = """
import json, sys, numpy as np, keras
cases, params, grads = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {}
for name, make in cases.items():
    opt = eval("keras.optimizers." + make)
    variables = [keras.Variable(np.asarray(p, np.float32)) for p in params]
    for step_grads in grads:
        opt.apply([np.asarray(g, np.float32) for g in step_grads], variables)
    out[name] = [np.asarray(v.numpy()).tolist() for v in variables]
print(json.dumps(out))
"""


def _problem() -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=3)}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(3)]
    cast = {k: v.astype(np.float32) for k, v in params.items()}
    return cast, [{k: v.astype(np.float32) for k, v in g.items()} for g in grads]


def test_reference_equals_keras_optimizers_of_the_same_name():
    params, grads = _problem()
    names = list(params)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            KERAS_STEPS,
            json.dumps({k: make for k, (_, make) in KERAS_CASES.items()}),
            json.dumps([params[n].tolist() for n in names]),
            json.dumps([[g[n].tolist() for n in names] for g in grads]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    keras_params = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (options, _) in KERAS_CASES.items():
        opt = ct.load_spec({"optimizer": {"name": name, **options}}).optimizer
        ours, slots = dict(params), {}
        for step, g in enumerate(grads):
            ours, slots = reference_step(opt, ours, g, slots, step)
        for i, n in enumerate(names):
            np.testing.assert_allclose(
                ours[n], keras_params[name][i], rtol=1e-5, atol=1e-6, err_msg=f"{name} {n}"
            )


def test_rules_against_hand_computations():
    p, g = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.25], np.float32)
    lion = ct.load_spec({"optimizer": {"name": "lion", "lr": 0.1}}).optimizer
    new, slots = reference_step(lion, {"w": p}, {"w": g}, {}, 0)
    np.testing.assert_allclose(new["w"], p - 0.1 * np.sign(g))
    np.testing.assert_allclose(slots["momentum"]["w"], 0.01 * g)
    sgd = ct.load_spec({"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}}).optimizer
    new, slots = reference_step(sgd, {"w": p}, {"w": g}, {"momentum": {"w": g}}, 1)
    np.testing.assert_allclose(slots["momentum"]["w"], 1.9 * g, rtol=1e-6)
    np.testing.assert_allclose(new["w"], p - 0.1 * 1.9 * g, rtol=1e-6)
    adam = ct.load_spec({"optimizer": {"name": "adamw", "lr": 0.1, "weight_decay": 0.5}})
    new, _ = reference_step(adam.optimizer, {"w": p}, {"w": g}, {}, 0)
    m_hat, v_hat = g, g * g  # bias-corrected first step
    expected = p * (1 - 0.05) - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(new["w"], expected, rtol=1e-6)


def test_per_parameter_overrides_scale_lr_and_decay():
    from crosstrain.nn.optimizers import ParamOptions

    p, g = np.ones(2, np.float32), np.ones(2, np.float32)
    sgd = ct.load_spec({"optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.5}}).optimizer
    overrides = {"b": ParamOptions(lr_scale=2.0, weight_decay=0.0)}
    new, _ = reference_step(sgd, {"a": p, "b": p}, {"a": g, "b": g}, {}, 0, overrides=overrides)
    np.testing.assert_allclose(new["a"], 1 - 0.1 * 1.5)
    np.testing.assert_allclose(new["b"], 1 - 0.2 * 1.0)


def test_a_plugin_optimizer_by_reference_and_by_registration(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    spec = ct.load_spec(
        {"optimizer": {"name": "crosstrain_rmsnorm.optimizer:ExampleSignum", "beta": 0.5}}
    )
    assert spec.optimizer.name == "example_signum" and spec.optimizer.beta == 0.5
    assert ct.load_spec(spec.to_dict()).optimizer == spec.optimizer  # named, not imported
    assert "example_signum" in ct.get_registry().optimizers

    class Halve(Optimizer):
        name: str = "test_halve"

        def update(self, xp, grad, param, slots, count, lr, weight_decay):
            return param / 2, {}

    ct.register_optimizer("test_halve", Halve)
    with pytest.raises(ValueError, match="already registered"):
        ct.register_optimizer(Halve)
    new, _ = reference_step(
        ct.load_spec({"optimizer": "test_halve"}).optimizer,
        {"w": np.ones(1, np.float32)},
        {"w": np.ones(1, np.float32)},
        {},
        0,
    )
    assert new["w"].tolist() == [0.5]
    with pytest.raises(SpecError, match="unknown optimizer 'lionn'; did you mean 'lion'"):
        ct.load_spec({"optimizer": {"name": "lionn"}})


@pytest.mark.parametrize(("source", "target"), [("torch", "jax"), ("jax", "torch")])
def test_a_factored_optimizer_state_moves_between_backends(source, target):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    spec = {
        "model": {"input_shape": [5], "layers": [{"type": "Dense", "units": 4}]},
        "loss": "mse",
        "optimizer": {"name": "adafactor", "lr": 0.05},
        "trainer": {"progress": False},
    }
    rng = np.random.default_rng(0)
    batches = [
        (rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32))
        for _ in range(3)
    ]
    first = ct.build(spec, backend=source)
    for batch in batches[:2]:
        first.train_step(batch)
    saved = first.get_state()
    assert saved.optimizer["r/dense_0/kernel"].shape == (5,)
    assert saved.optimizer["c/dense_0/kernel"].shape == (4,)
    second = ct.build(spec, backend=target)
    second.set_state(saved)
    for program in (first, second):
        program.train_step(batches[2])
    a, b = first.get_state(), second.get_state()
    for key in (*a.params, *a.optimizer):
        np.testing.assert_allclose(
            {**b.params, **b.optimizer}[key], {**a.params, **a.optimizer}[key], rtol=1e-5, atol=1e-6
        )
