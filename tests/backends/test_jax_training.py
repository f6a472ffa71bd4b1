"""JAX backend as a whole: state round trips, torch parity, determinism, precision, fused steps,
data parallel, and that registering it imports no JAX."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")

import crosstrain as ct
from conftest import ROOT, run_python, tiny_spec
from crosstrain.backends.jax import JaxBackend
from crosstrain.nn.model import init_params

QUIET = {"progress": False, "loggers": [], "checkpoint": None}
CNN = {  # no bias before BatchNorm: its gradient is rounding noise that Adam would amplify
    "input_shape": [8, 8, 1],
    "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False},
        {"type": "BatchNorm"},
        {"type": "ReLU"},
        {"type": "MaxPool2D", "pool_size": 2},
        {"type": "Flatten"},
        {"type": "Dense", "units": 10},
    ],
}


def _cnn_spec(**trainer: object) -> ct.Spec:
    return ct.load_spec(
        {
            "model": CNN,
            "optimizer": {"name": "adam", "lr": 0.01},
            "metrics": ["accuracy"],
            "trainer": {**QUIET, **trainer},
        }
    )


def _digits_images(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data[:n] / 16.0).reshape(-1, 8, 8, 1).astype(np.float32), bunch.target[:n].astype(
        np.int64
    )


def _torch_or_skip() -> None:
    try:
        ct.build(_cnn_spec(), backend="torch")
    except Exception as err:  # the reference backend is built in parallel; say why it is missing
        pytest.skip(f"torch backend not usable yet: {type(err).__name__}: {err}")


def _train(
    program: ct.Program, x: np.ndarray, y: np.ndarray, steps: int, batch: int = 32
) -> list[float]:
    losses = []
    for i in range(steps):
        rows = slice((i * batch) % len(x), (i * batch) % len(x) + batch)
        losses.append(program.metrics_to_host([program.train_step((x[rows], y[rows]))])["loss"])
    return losses


def _assert_states_close(
    a: ct.CanonicalState, b: ct.CanonicalState, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    assert a.step == b.step
    assert set(a.params) == set(b.params) and set(a.optimizer) == set(b.optimizer)
    for name in a.params:
        np.testing.assert_allclose(
            a.params[name], b.params[name], rtol=rtol, atol=atol, err_msg=name
        )
    for name in a.optimizer:
        np.testing.assert_allclose(
            a.optimizer[name], b.optimizer[name], rtol=rtol, atol=atol, err_msg=name
        )


def test_state_round_trip_is_identical() -> None:
    x, y = _digits_images()
    program = ct.build(_cnn_spec(), backend="jax")
    _train(program, x, y, 3)
    first = program.get_state()
    assert first.step == 3 and set(first.rng) == {"jax"}
    assert {k.split("/")[0] for k in first.optimizer} == {"m", "v"}
    program.set_state(first)
    second = program.get_state()
    _assert_states_close(first, second, rtol=0, atol=0)
    np.testing.assert_array_equal(first.rng["jax"], second.rng["jax"])
    fresh = ct.build(_cnn_spec(), backend="jax")
    fresh.set_state(first)
    np.testing.assert_array_equal(fresh.predict_step((x, None)), program.predict_step((x, None)))
    np.testing.assert_array_equal(_train(fresh, x, y, 2), _train(program, x, y, 2))


def test_set_state_rejects_a_foreign_model() -> None:
    program = ct.build(_cnn_spec(), backend="jax")
    state = program.get_state()
    state.params["conv2d_0/kernel"] = np.zeros((5, 5, 1, 4), np.float32)
    with pytest.raises(ct.CheckpointError, match="conv2d_0/kernel"):
        program.set_state(state)


def test_torch_state_loads_into_jax_and_back() -> None:
    _torch_or_skip()
    x, y = _digits_images()
    torch_program, jax_program = (
        ct.build(_cnn_spec(), backend="torch"),
        ct.build(_cnn_spec(), backend="jax"),
    )
    _train(torch_program, x, y, 3)
    jax_program.set_state(torch_program.get_state())
    np.testing.assert_allclose(
        jax_program.predict_step((x, None)),
        torch_program.predict_step((x, None)),
        rtol=1e-5,
        atol=1e-5,
    )
    _train(jax_program, x, y, 2)
    _train(torch_program, x, y, 2)
    _assert_states_close(jax_program.get_state(), torch_program.get_state(), rtol=1e-4, atol=1e-5)
    back = ct.build(_cnn_spec(), backend="torch")
    back.set_state(jax_program.get_state())
    np.testing.assert_allclose(
        back.predict_step((x, None)), jax_program.predict_step((x, None)), rtol=1e-5, atol=1e-5
    )


class _Losses(ct.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_batch_end(self, stage: str, logs: dict | None) -> None:
        if stage == "train" and logs:
            self.losses.append(logs["train_loss"])


def test_digits_mlp_loss_curve_matches_torch_for_200_steps() -> None:
    _torch_or_skip()
    spec = ct.load_spec(ROOT / "examples" / "digits_mlp.yaml")
    layers = [layer for layer in spec.to_dict()["model"]["layers"] if layer["type"] != "Dropout"]
    spec = spec.override(
        {
            "model.layers": layers,
            "trainer.max_steps": 200,
            "trainer.log_every_n_steps": 1,
            **{f"trainer.{k}": v for k, v in QUIET.items()},
        }
    )
    curves = {}
    for backend in ("jax", "torch"):
        recorder = _Losses()
        ct.fit(spec, backend=backend, run_dir=False, callbacks=[recorder])
        curves[backend] = np.array(recorder.losses)
    assert len(curves["jax"]) == 200
    np.testing.assert_allclose(curves["jax"], curves["torch"], rtol=1e-3)


def test_rerun_with_the_same_seed_is_bit_identical() -> None:
    spec = tiny_spec(
        model={
            "input_shape": [8],
            "layers": [
                {"type": "Dense", "units": 16},
                {"type": "Dropout", "rate": 0.3},
                {"type": "Dense", "units": 3},
            ],
        }
    )
    spec["trainer"].update(QUIET)
    first, second = (ct.fit(spec, backend="jax", run_dir=False) for _ in range(2))
    assert first.history == second.history
    for name in first.state.params:
        np.testing.assert_array_equal(first.state.params[name], second.state.params[name])
    other = ct.fit({**spec, "seed": 1}, backend="jax", run_dir=False)
    assert other.history != first.history


def test_steps_per_execution_equals_single_steps() -> None:
    spec = tiny_spec()
    spec["trainer"].update(QUIET, log_every_n_steps=3)
    single = ct.fit(spec, backend="jax", run_dir=False)
    fused_spec = {**spec, "trainer": {**spec["trainer"], "steps_per_execution": 4}}
    fused = ct.fit(fused_spec, backend="jax", run_dir=False)
    assert fused.state.step == single.state.step
    for name in single.state.params:
        np.testing.assert_allclose(
            fused.state.params[name], single.state.params[name], rtol=1e-5, atol=1e-6
        )
    for key, value in single.metrics.items():
        assert fused.metrics[key] == pytest.approx(value, rel=1e-5)


def test_device_cached_batches_equal_host_batches() -> None:
    x, y = _digits_images()
    host, cached = ct.build(_cnn_spec(), backend="jax"), ct.build(_cnn_spec(), backend="jax")
    data = cached.cache_data(x, y)
    assert data is not None
    order = np.random.default_rng(0).permutation(len(x))
    rows = [order[i : i + 16] for i in range(0, 64, 16)]
    outputs = {"host": [], "cached": []}
    for index in rows[:2]:
        outputs["host"].append(host.train_step((x[index], y[index])))
        outputs["cached"].append(cached.train_step((data, index)))
    stacked = np.stack(rows[2:])
    outputs["host"].append(host.train_steps((x[stacked], y[stacked])))
    outputs["cached"].append(cached.train_steps((data, stacked)))
    outputs["host"].append(host.eval_step((x[order[:40]], y[order[:40]])))
    outputs["cached"].append(cached.eval_step((data, order[:40])))
    for h, c in zip(outputs["host"], outputs["cached"], strict=True):
        np.testing.assert_array_equal(np.asarray(h), np.asarray(c))
    _assert_states_close(host.get_state(), cached.get_state(), rtol=0, atol=0)
    off_spec = {**_cnn_spec().to_dict(), "data": {"device_cache": "off"}}
    off = ct.build(off_spec, backend="jax")
    assert off.cache_data(x, y) is None


def test_bf16_mixed_keeps_float32_parameters() -> None:
    x, y = _digits_images()
    full, mixed = (
        ct.build(_cnn_spec(), backend="jax"),
        ct.build(_cnn_spec(precision="bf16-mixed"), backend="jax"),
    )
    full_losses, mixed_losses = _train(full, x, y, 6), _train(mixed, x, y, 6)
    assert np.all(np.isfinite(mixed_losses))
    assert mixed_losses[0] == pytest.approx(full_losses[0], rel=3e-2)
    assert mixed_losses[-1] < mixed_losses[0]
    assert all(v.dtype == np.float32 for v in mixed.get_state().params.values())


@pytest.mark.parametrize("precision", ["16-mixed", "64", "bf16-true"])
def test_unsupported_precision_fails_before_training(precision: str) -> None:
    spec = tiny_spec()
    spec["trainer"].update(QUIET, precision=precision)
    with pytest.raises(ct.UnsupportedFeature, match=precision):
        ct.fit(spec, backend="jax", run_dir=False)
    with pytest.raises(ct.UnsupportedFeature):
        JaxBackend().build(ct.load_spec(spec), ct.RunEnv(precision=precision))


def test_backend_declares_itself_without_importing_jax() -> None:
    code = textwrap.dedent(
        """
        import sys
        import crosstrain.backends.jax as backend
        import crosstrain
        crosstrain.get_registry()
        jax_backend = crosstrain.get_registry().backend("jax")
        print(jax_backend.is_available(), jax_backend.version(), sorted(jax_backend.capabilities().precisions))
        assert not {"jax", "flax", "optax"} & set(sys.modules), sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "optax"))
        """
    )
    done = run_python(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "(True, '')" in done.stdout and "bf16-mixed" in done.stdout
    assert JaxBackend().accelerators_found()[0] == "cpu"


DATA_PARALLEL = """
import json
import numpy as np
import crosstrain as ct

spec = {"model": json.loads(%r), "optimizer": {"name": "adam", "lr": 0.01}, "metrics": ["accuracy"],
        "trainer": {"progress": False, "devices": 1}}
rng = np.random.default_rng(0)
x = rng.normal(size=(64 * 3 + 30, 8, 8, 1)).astype(np.float32)
y = rng.integers(0, 10, len(x))
batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64)]
results = {}
for devices in (1, 4):
    spec["trainer"]["devices"] = devices
    program = ct.build(spec, backend="jax")
    losses = [program.metrics_to_host([program.train_step(b)])["loss"] for b in batches]
    fused = program.train_steps((x[:128].reshape(2, 64, 8, 8, 1), y[:128].reshape(2, 64)))
    losses.append(program.metrics_to_host([fused])["loss"])
    losses.append(program.metrics_to_host([program.eval_step(batches[-1])])["loss"])
    data = program.cache_data(x, y)
    rows = np.arange(128).reshape(2, 64)
    losses.append(program.metrics_to_host([program.train_step((data, rows[0]))])["loss"])
    losses.append(program.metrics_to_host([program.train_steps((data, rows))])["loss"])
    losses.append(program.metrics_to_host([program.eval_step((data, np.arange(30)))])["loss"])
    state = program.get_state()
    results[devices] = {"losses": losses, "devices": len(program.placement.devices),
                        "params": {k: v.tolist() for k, v in state.params.items()}}
print(json.dumps(results))
"""


def test_data_parallel_on_four_host_devices_equals_one_device() -> None:
    done = run_python(
        DATA_PARALLEL % json.dumps(CNN),
        cwd=ROOT,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    single, parallel = results["1"], results["4"]
    assert parallel["devices"] == 4
    np.testing.assert_allclose(parallel["losses"], single["losses"], rtol=1e-5)
    for name, value in single["params"].items():
        np.testing.assert_allclose(
            parallel["params"][name], value, rtol=1e-4, atol=1e-5, err_msg=name
        )


@pytest.mark.slow
@pytest.mark.parametrize("example", ["digits_mlp.yaml", "digits_cnn.yaml"])
def test_examples_reach_95_percent(example: str) -> None:
    spec = ct.load_spec(ROOT / "examples" / example).override(
        {f"trainer.{k}": v for k, v in QUIET.items()}
    )
    result = ct.fit(spec, backend="jax", run_dir=False)
    assert result.metrics["val_accuracy"] >= 0.95


def test_native_init_draws_on_the_device_with_the_declared_distributions() -> None:
    spec = _cnn_spec().override({"model.init": "native"})
    state = ct.build(spec, backend="jax").get_state()
    reference = init_params(spec.model, spec.seed)
    assert {n: v.shape for n, v in state.params.items()} == {
        n: v.shape for n, v in reference.items()
    }
    kernel = state.params["dense_5/kernel"]
    assert np.abs(kernel).max() <= np.sqrt(6.0 / (64 + 10)) and kernel.std() > 0.05
    assert not np.array_equal(kernel, reference["dense_5/kernel"])
    np.testing.assert_array_equal(state.params["batchnorm_1/gamma"], 1.0)
