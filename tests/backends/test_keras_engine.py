"""Keras backend on ONE engine: layer forward vs numpy, gradients and training vs torch, optimizer
steps vs `reference_step`, state, precision, fused steps, export, accuracy.

Keras fixes its engine at first import, so this module runs only in a process started by
`test_keras_backend.py` with `CROSSTRAIN_KERAS_ENGINE` (and `KERAS_BACKEND`) set; collected in
any other process it is skipped. By hand:
`CROSSTRAIN_KERAS_ENGINE=jax KERAS_BACKEND=jax python -m pytest tests/backends/test_keras_engine.py`.
"""

from __future__ import annotations

import os
from typing import Literal

import crosstrain as ct
import numpy as np
import pytest
from conftest import EXAMPLES
from crosstrain.nn.layers import Layer, ParamSpec
from crosstrain.nn.model import forward, output_shape, param_specs
from crosstrain.nn.optim import reference_step
from layer_cases import LAYER_CASES, random_inputs, random_state

ENGINE = os.environ.get("CROSSTRAIN_KERAS_ENGINE")
if not ENGINE:
    pytest.skip(
        "runs per Keras engine in its own process (test_keras_backend.py)", allow_module_level=True
    )

BACKEND = f"keras:{ENGINE}"
BATCH = 4
QUIET = {"progress": False, "loggers": [], "checkpoint": None}

CASES = {
    k: v for k, v in LAYER_CASES.items() if k not in {"dropout", "dense", "dense_no_bias_gelu"}
}


def _spec(case: str, lead: bool = False, **optimizer: object) -> ct.Spec:
    """The case's model; `lead` puts a shape-keeping Dense first so every layer gets gradients."""
    shape, layers = CASES[case]
    if lead and case != "embedding":
        layers = [{"type": "Dense", "units": shape[-1], "name": "lead"}, *layers]
    opt = optimizer or {"name": "sgd", "lr": 1.0}
    return ct.load_spec(
        {
            "model": {"input_shape": shape, "layers": layers},
            "loss": "mse",
            "optimizer": opt,
            "trainer": QUIET,
        }
    )


def _torch_or_skip() -> None:
    try:
        ct.build(_spec("dense_tanh"), backend="torch")
    except Exception as err:  # the reference backend is built in parallel; say why it is missing
        pytest.skip(f"torch backend not usable: {type(err).__name__}: {err}")


def _digits(n: int | None = None, images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    x = x.reshape(-1, 8, 8, 1) if images else x
    return x[:n], bunch.target[:n].astype(np.int64)


def _train(
    program: ct.Program, x: np.ndarray, y: np.ndarray, steps: int, batch: int = 32
) -> list[float]:
    losses = []
    for i in range(steps):
        start = (i * batch) % (len(x) - batch + 1)
        rows = slice(start, start + batch)
        losses.append(program.metrics_to_host([program.train_step((x[rows], y[rows]))])["loss"])
    return losses


def _assert_states_close(
    a: ct.CanonicalState, b: ct.CanonicalState, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    assert a.step == b.step
    assert set(a.params) == set(b.params)
    for name in a.params:
        np.testing.assert_allclose(
            a.params[name], b.params[name], rtol=rtol, atol=atol, err_msg=name
        )
    for name in set(a.optimizer) & set(b.optimizer):
        np.testing.assert_allclose(
            a.optimizer[name], b.optimizer[name], rtol=rtol, atol=atol, err_msg=name
        )


def test_process_runs_the_requested_engine() -> None:
    import keras

    assert keras.backend.backend() == ENGINE
    assert ct.build(_spec("dense_tanh"), backend="keras").engine == ENGINE


# -- layers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_forward_matches_numpy_and_gradients_match_torch(case: str) -> None:
    """From the same random weights: the compiled forward equals the numpy reference, and one
    SGD step with lr 1 equals torch's (`before - after` is the gradient; BatchNorm runs on batch
    statistics and updates its moving statistics). A shape-keeping Dense goes first so every
    layer of the case gets gradients."""
    spec = _spec(case, lead=True)
    state, x = random_state(spec), random_inputs(spec)
    program = ct.build(spec, backend=BACKEND)
    program.set_state(state)
    np.testing.assert_allclose(
        program.predict_step((x, None)), forward(spec.model, state.params, x), rtol=1e-5, atol=1e-6
    )
    _torch_or_skip()
    y = np.random.default_rng(3).normal(size=(BATCH, *output_shape(spec.model))).astype(np.float32)
    reference = ct.build(spec, backend="torch")
    reference.set_state(state)
    keras_loss, torch_loss = (
        p.metrics_to_host([p.train_step((x, y))])["loss"] for p in (program, reference)
    )
    np.testing.assert_allclose(keras_loss, torch_loss, rtol=1e-5)
    keras_state, torch_state = program.get_state(), reference.get_state()
    trainable = {n for n, p in param_specs(spec.model).items() if p.trainable}
    for name, before in state.params.items():
        if name in trainable:
            np.testing.assert_allclose(
                before - keras_state.params[name],
                before - torch_state.params[name],
                rtol=1e-4,
                atol=1e-6,
                err_msg=name,
            )
        else:
            np.testing.assert_allclose(
                keras_state.params[name],
                torch_state.params[name],
                rtol=1e-5,
                atol=1e-6,
                err_msg=name,
            )


def test_batchnorm_moving_statistics_follow_keras() -> None:
    spec = _spec("batchnorm")
    state, x = random_state(spec), random_inputs(spec)
    program = ct.build(spec, backend=BACKEND)
    program.set_state(state)
    program.train_step((x, np.zeros((BATCH, 6, 4), np.float32)))
    after = program.get_state().params
    mean, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
    np.testing.assert_allclose(
        after["batchnorm_0/moving_mean"],
        state.params["batchnorm_0/moving_mean"] * 0.9 + mean * 0.1,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        after["batchnorm_0/moving_variance"],
        state.params["batchnorm_0/moving_variance"] * 0.9 + var * 0.1,
        rtol=1e-5,
        atol=1e-6,
    )


# -- optimizers -----------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.1},
    "sgd_momentum_l2": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
    "sgd_nesterov_step_schedule": {"name": "sgd", "lr": 0.1, "momentum": 0.8, "nesterov": True},
    "adam": {"name": "adam", "lr": 0.01},
    "adam_l2_clipped": {"name": "adam", "lr": 0.01, "weight_decay": 0.05, "clip_norm": 0.05},
    "adamw_cosine": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
    "rmsprop": {"name": "rmsprop", "lr": 0.01},
    "rmsprop_momentum_linear": {
        "name": "rmsprop",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.01,
    },
    "lion": {"name": "lion", "lr": 0.01, "weight_decay": 0.1},
    "adagrad": {"name": "adagrad", "lr": 0.1},
    "adadelta": {"name": "adadelta", "lr": 1.0, "weight_decay": 0.01},
    "adafactor": {"name": "adafactor", "lr": 0.1},
}
SCHEDULES = {
    "sgd_nesterov_step_schedule": {"name": "step", "step_size": 2, "gamma": 0.5, "warmup_steps": 1},
    "adamw_cosine": {"name": "cosine", "warmup_steps": 2, "min_ratio": 0.1},
    "rmsprop_momentum_linear": {"name": "linear", "end_ratio": 0.2},
}


@pytest.mark.parametrize("case", sorted(OPTIMIZERS))
def test_optimizer_step_matches_reference(case: str) -> None:
    """One update from random weights and slots at step 3 equals `reference_step` (the gradient
    of a mean squared error on a linear layer is computed exactly in float64)."""
    total = 20
    data = {
        "model": {"input_shape": [5], "layers": [{"type": "Dense", "units": 3}]},
        "loss": "mse",
        "optimizer": OPTIMIZERS[case],
        "schedule": SCHEDULES.get(case),
        "trainer": QUIET,
    }
    spec = ct.load_spec({k: v for k, v in data.items() if v is not None})
    rng = np.random.default_rng(7)
    params = {
        "dense_0/kernel": rng.normal(size=(5, 3)).astype(np.float32),
        "dense_0/bias": rng.normal(size=3).astype(np.float32),
    }
    slots: dict[str, dict[str, np.ndarray]] = {}
    for n, p in params.items():
        for s, shape in spec.optimizer.slot_shapes(p.shape).items():
            slots.setdefault(s, {})[n] = np.abs(rng.normal(size=shape)).astype(np.float32) + 0.1
    step = 3
    program = ct.build(spec, backend=BACKEND, total_steps=total)
    program.set_state(
        ct.CanonicalState(
            params, {f"{s}/{n}": v for s, d in slots.items() for n, v in d.items()}, step
        )
    )
    x, y = rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    program.train_step((x, y))
    after = program.get_state()
    x64, k64, b64 = (
        x.astype(np.float64),
        params["dense_0/kernel"].astype(np.float64),
        params["dense_0/bias"].astype(np.float64),
    )
    dout = 2.0 * (x64 @ k64 + b64 - y) / y.size
    grads = {"dense_0/kernel": x64.T @ dout, "dense_0/bias": dout.sum(axis=0)}
    lr = spec.optimizer.lr * (spec.schedule.factor(step, total) if spec.schedule else 1.0)
    expected, expected_slots = reference_step(spec.optimizer, params, grads, slots, step, lr)
    assert after.step == step + 1
    for name in params:
        np.testing.assert_allclose(
            after.params[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name
        )
    for slot, values in expected_slots.items():
        for name, value in values.items():
            np.testing.assert_allclose(
                after.optimizer[f"{slot}/{name}"],
                value,
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"{slot}/{name}",
            )


# -- state ----------------------------------------------------------------------------------

CNN = {  # no bias before BatchNorm: its gradient is rounding noise that Adam would amplify
    "input_shape": [8, 8, 1],
    "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False},
        {"type": "BatchNorm"},
        {"type": "ReLU"},
        {"type": "MaxPool2D", "pool_size": 2},
        {"type": "Flatten"},
        {"type": "Dropout", "rate": 0.0},
        {"type": "Dense", "units": 10},
    ],
}


def _cnn_spec(dropout: float = 0.0, **trainer: object) -> ct.Spec:
    layers = [
        dict(layer, rate=dropout) if layer["type"] == "Dropout" else layer
        for layer in CNN["layers"]
    ]
    data = {
        "model": {**CNN, "layers": layers},
        "optimizer": {"name": "adam", "lr": 0.01},
        "metrics": ["accuracy"],
        "trainer": {**QUIET, **trainer},
    }
    return ct.load_spec(data)


def test_state_round_trip_is_identical_and_resumes_the_dropout_stream() -> None:
    x, y = _digits(96, images=True)
    program = ct.build(_cnn_spec(dropout=0.3), backend=BACKEND)
    _train(program, x, y, 3)
    first = program.get_state()
    assert first.step == 3 and {k.split("/")[0] for k in first.optimizer} == {"m", "v"}
    assert first.rng and all(k.startswith("keras/") for k in first.rng)
    program.set_state(first)
    _assert_states_close(first, program.get_state(), rtol=0, atol=0)
    fresh = ct.build(_cnn_spec(dropout=0.3), backend=BACKEND)
    fresh.set_state(first)
    np.testing.assert_array_equal(fresh.predict_step((x, None)), program.predict_step((x, None)))
    np.testing.assert_array_equal(_train(fresh, x, y, 2), _train(program, x, y, 2))


def test_set_state_rejects_a_foreign_model() -> None:
    program = ct.build(_cnn_spec(), backend=BACKEND)
    state = program.get_state()
    state.params["conv2d_0/kernel"] = np.zeros((5, 5, 1, 4), np.float32)
    with pytest.raises(ct.CheckpointError, match="conv2d_0/kernel"):
        program.set_state(state)


def test_torch_state_loads_into_keras_and_back() -> None:
    _torch_or_skip()
    x, y = _digits(96, images=True)
    torch_program, keras_program = (
        ct.build(_cnn_spec(), backend="torch"),
        ct.build(_cnn_spec(), backend=BACKEND),
    )
    _train(torch_program, x, y, 3)
    keras_program.set_state(torch_program.get_state())
    _assert_states_close(keras_program.get_state(), torch_program.get_state(), rtol=0, atol=0)
    np.testing.assert_allclose(
        keras_program.predict_step((x, None)),
        torch_program.predict_step((x, None)),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        _train(keras_program, x, y, 2), _train(torch_program, x, y, 2), rtol=1e-4
    )
    back = ct.build(_cnn_spec(), backend="torch")
    back.set_state(keras_program.get_state())
    _assert_states_close(back.get_state(), keras_program.get_state(), rtol=0, atol=0)


def test_digits_mlp_200_steps_track_torch() -> None:
    """Same weights, same batches, no dropout: the loss curves agree within 1e-3 relative."""
    _torch_or_skip()
    spec = ct.load_spec(EXAMPLES / "digits_mlp.yaml").override(
        {"model.layers[2].rate": 0.0, "trainer.progress": False}
    )
    x, y = _digits()
    curves = []
    for backend in (BACKEND, "torch"):
        program = ct.build(spec, backend=backend, total_steps=200)
        outputs = []
        for i in range(200):
            start = (i * 64) % (len(x) - 64)
            outputs.append(program.train_step((x[start : start + 64], y[start : start + 64])))
        curves.append([program.metrics_to_host([o])["loss"] for o in outputs])
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-3)
    assert curves[0][-1] < 0.3 * curves[0][0]


# -- compiled paths, precision, export ------------------------------------------------------


def test_fused_steps_equal_single_steps() -> None:
    x, y = _digits(96, images=True)
    fused, single = ct.build(_cnn_spec(), backend=BACKEND), ct.build(_cnn_spec(), backend=BACKEND)
    xs, ys = x[:96].reshape(3, 32, 8, 8, 1), y[:96].reshape(3, 32)
    a = fused.metrics_to_host([fused.train_steps((xs, ys))])
    b = single.metrics_to_host([single.train_step((xs[i], ys[i])) for i in range(3)])
    assert a == pytest.approx(b, rel=1e-5)
    _assert_states_close(fused.get_state(), single.get_state())


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_computes_low_and_keeps_float32_weights(precision: str) -> None:
    x, y = _digits(256)
    spec = ct.load_spec(EXAMPLES / "digits_mlp.yaml").override(
        {"trainer.precision": precision, "trainer.progress": False}
    )
    program = ct.build(spec, backend=BACKEND, total_steps=60)
    expected = "bfloat16" if precision == "bf16-mixed" else "float16"
    layers = [layer for layer in program.native_model.layers if layer.weights]
    assert {layer.compute_dtype for layer in layers} == {expected}
    assert {layer.variable_dtype for layer in layers} == {"float32"}
    losses = _train(program, x, y, 60)
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    state = program.get_state()
    assert all(v.dtype == np.float32 for v in state.params.values())
    assert program.predict_step((x[:4], None)).dtype == np.float32


def test_export_writes_a_keras_file_that_loads_in_safe_mode(tmp_path) -> None:
    import keras

    spec = _spec("mhsa_causal_in_residual", lead=True)
    program = ct.build(spec, backend=BACKEND)
    program.set_state(random_state(spec))
    path = program.export(tmp_path / "model.keras", "keras")
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = random_inputs(spec)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), program.predict_step((x, None)), rtol=1e-6, atol=1e-6
    )


# -- accuracy -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("example", ["digits_mlp", "digits_cnn"])
def test_digits_example_reaches_95_percent(example: str) -> None:
    spec = ct.load_spec(EXAMPLES / f"{example}.yaml").override(
        {"trainer.progress": False, "trainer.loggers": [], "trainer.checkpoint": None}
    )
    result = ct.fit(spec, backend=BACKEND, run_dir=False)
    assert result.metrics["val_accuracy"] >= 0.95, result.metrics


def test_explicit_cpu_accelerator_places_the_run_on_cpu() -> None:
    x, y = _digits(64)
    spec = ct.load_spec(EXAMPLES / "digits_mlp.yaml").override(
        {"trainer.accelerator": "cpu", "trainer.progress": False}
    )
    program = ct.build(spec, backend=BACKEND)
    assert program.metrics_to_host([program.train_step((x, y))])["loss"] > 0
    assert program.predict_step((x[:3], None)).shape == (3, 10)


class _Scale(Layer):
    """A third party's layer: `x * scale`, with its Keras implementation attached."""

    type: Literal["KerasTestScale"] = "KerasTestScale"

    def params(self, input_shape: tuple[int, ...]) -> dict[str, ParamSpec]:
        return {"scale": ParamSpec((input_shape[-1],), "ones")}

    def forward(self, xp, params, x, training=False, rng=None):
        return x * params["scale"]

    def keras_layer(self, input_shape: tuple[int, ...], name: str, dtype: object) -> object:
        import keras

        class Scale(keras.layers.Layer):
            def build(self, shape: tuple[int, ...]) -> None:
                self.scale = self.add_weight(shape=(shape[-1],), initializer="ones")

            def call(self, x: object) -> object:
                return x * self.scale

        return Scale(name=name, dtype=dtype)


@pytest.fixture
def scale_layer():
    table = ct.get_registry().layers
    table.add(_Scale)
    yield _Scale
    del table._entries["KerasTestScale"], table.owners["KerasTestScale"]


def test_plugin_layer_uses_its_keras_layer(scale_layer: type[Layer]) -> None:
    data = {
        "model": {
            "input_shape": [3],
            "layers": [{"type": "Dense", "units": 4}, {"type": "KerasTestScale"}],
        },
        "loss": "mse",
        "optimizer": {"name": "sgd", "lr": 0.1},
        "trainer": QUIET,
    }
    spec = ct.load_spec(data)
    assert "KerasTestScale" in ct.get_registry().backend("keras").capabilities().layers
    program = ct.build(spec, backend=BACKEND)
    state = random_state(spec)
    program.set_state(state)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    expected = forward(spec.model, state.params, x)
    np.testing.assert_allclose(program.predict_step((x, None)), expected, rtol=1e-5, atol=1e-6)
    program.train_step((x, np.zeros((5, 4), np.float32)))
    after = program.get_state().params["kerastestscale_1/scale"]
    assert not np.allclose(after, state.params["kerastestscale_1/scale"])
