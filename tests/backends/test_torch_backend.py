"""The torch backend as a whole: plugin, build checks, steps, canonical state, precisions."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Literal

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crosstrain.backends.torch.plugin import TorchBackend  # noqa: E402
from crosstrain.checkpoint.format import CanonicalState  # noqa: E402
from crosstrain.errors import CheckpointError, CrosstrainError, SpecError, UnsupportedFeature  # noqa: E402
from crosstrain.nn.layers import Layer  # noqa: E402
from crosstrain.nn.model import init_params  # noqa: E402
from crosstrain.plugin.protocol import Backend, Program, RunEnv  # noqa: E402
from crosstrain.spec.schema import validate_spec  # noqa: E402

CONV = [
    {
        "type": "Conv2D",
        "filters": 4,
        "kernel_size": 3,
        "strides": 2,
        "padding": "same",
        "activation": "relu",
    },
    {"type": "BatchNorm"},
    {"type": "MaxPool2D", "padding": "same"},
    {"type": "Flatten"},
    {"type": "Dropout", "rate": 0.2},
    {"type": "Dense", "units": 3},
]


def make_spec(
    layers: list[Any] | None = None, input_shape: tuple[int, ...] = (6, 6, 2), **extra: Any
) -> Any:
    data: dict[str, Any] = {
        "model": {"input_shape": list(input_shape), "layers": layers or CONV},
        "metrics": ["accuracy"],
        **extra,
    }
    return validate_spec(data)


def build(spec: Any = None, **env: Any) -> Any:
    env.setdefault("accelerator", "cpu")
    return TorchBackend().build(spec if spec is not None else make_spec(), RunEnv(**env))


def data(
    n: int = 16, shape: tuple[int, ...] = (6, 6, 2), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, 3, size=n)


def assert_states_equal(a: CanonicalState, b: CanonicalState) -> None:
    assert a.params.keys() == b.params.keys() and a.optimizer.keys() == b.optimizer.keys()
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    for key in a.optimizer:
        np.testing.assert_array_equal(a.optimizer[key], b.optimizer[key], err_msg=key)
    assert a.step == b.step
    assert a.rng.keys() == b.rng.keys()
    for key in a.rng:
        np.testing.assert_array_equal(a.rng[key], b.rng[key])


# -- plugin -------------------------------------------------------------------------------------


def test_import_does_not_import_torch() -> None:
    code = "import sys, crosstrain.backends.torch as t; t.crosstrain_add_backends()[0].capabilities(); assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_plugin_declares_backend() -> None:
    from crosstrain.backends.torch import crosstrain_add_backends

    backend = crosstrain_add_backends()[0]
    assert isinstance(backend, Backend)
    assert backend.name == "torch" and backend.extra == "torch"
    assert backend.is_available() == (True, "")
    assert backend.version() == torch.__version__.split("+")[0] or backend.version().startswith(
        torch.__version__.split("+")[0]
    )
    caps = backend.capabilities()
    assert {"Dense", "Conv2D", "MultiHeadSelfAttention", "Residual", "Sequential"} <= caps.layers
    assert caps.precisions == {"32", "64", "16-mixed", "bf16-mixed", "bf16-true"}
    assert caps.accelerators == {"cpu", "cuda", "mps", "tpu"} and caps.strategies == {
        "auto",
        "ddp",
        "fsdp",
    }
    assert caps.compile and caps.native_models and not caps.steps_per_execution
    assert backend.accelerators_found()[0] == "cpu"


def test_registry_lists_torch() -> None:
    from crosstrain.plugin.registry import get_registry

    assert get_registry().backend("torch").name == "torch"


# -- unsupported features fail at build ----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "spec_extra", "feature"),
    [
        ({"strategy": "fsdp", "precision": "16-mixed"}, {}, "'16-mixed' with strategy 'fsdp'"),
        ({}, {"trainer": {"steps_per_execution": 4}}, "steps_per_execution"),
        ({"precision": "8-true"}, {}, "precision '8-true'"),
        ({"accelerator": "ipu"}, {}, "accelerator 'ipu'"),
    ],
)
def test_unsupported_features(
    env: dict[str, Any], spec_extra: dict[str, Any], feature: str
) -> None:
    with pytest.raises(UnsupportedFeature, match=feature) as info:
        build(make_spec(**spec_extra), **env)
    assert info.value.backend == "torch"


class NoTorch(Layer):
    type: Literal["TestNoTorch"] = "TestNoTorch"


def test_layer_without_torch_implementation() -> None:
    spec = make_spec([{"type": "Dense", "units": 2}, NoTorch()], (4,))
    with pytest.raises(UnsupportedFeature, match="TestNoTorch"):
        build(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_accelerator_names_what_was_found() -> None:
    with pytest.raises(CrosstrainError, match="accelerator 'cuda' not found. Available: cpu"):
        build(accelerator="cuda")


def test_no_model_and_no_native_model() -> None:
    with pytest.raises(SpecError, match="model"):
        build(validate_spec({}))


def test_native_model_must_be_a_module() -> None:
    with pytest.raises(UnsupportedFeature, match="native model"):
        build(validate_spec({}), native_model=object())


# -- steps --------------------------------------------------------------------------------------


def test_program_protocol_and_steps() -> None:
    program = build()
    assert isinstance(program, Program)
    assert isinstance(program.native_model, torch.nn.Module)
    assert program.total_params == sum(v.size for v in init_params(program.spec.model, 0).values())
    x, y = data()
    out = program.train_step((x, y))
    # (rows, loss, accuracy): the positions of jax's and keras's vector; no sync, no graph
    assert len(out) == 3 and out[0] == 16 and program.metric_names == ("loss", "accuracy")
    assert all(v.device.type == "cpu" and not v.requires_grad for v in out[1:])
    values = program.metrics_to_host([out])
    assert set(values) == {"loss", "accuracy"} and all(
        isinstance(v, float) for v in values.values()
    )
    assert program.predict_step((x, None)).shape == (16, 3)
    assert program.metrics_to_host([]) == {}


def test_train_steps_equal_single_steps() -> None:
    x, y = data(24)
    single = build()
    outputs = [single.train_step((x[i : i + 8], y[i : i + 8])) for i in range(0, 24, 8)]
    grouped = build()
    merged = grouped.train_steps((x.reshape(3, 8, 6, 6, 2), y.reshape(3, 8)))
    assert len(merged) == 3 and merged[0] == 24
    assert grouped.metrics_to_host([merged]) == pytest.approx(
        single.metrics_to_host(outputs), rel=1e-6
    )
    a, b = single.get_state(), grouped.get_state()
    a.rng, b.rng = {}, {}
    assert_states_equal(a, b)


def test_metrics_to_host_weights_by_batch_size() -> None:
    program = build()
    x, y = data(20)
    parts = [program.eval_step((x[:15], y[:15])), program.eval_step((x[15:], y[15:]))]
    whole = program.metrics_to_host([program.eval_step((x, y))])
    split = program.metrics_to_host(parts)
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    assert split["accuracy"] == pytest.approx(whole["accuracy"], rel=1e-6)


def test_initial_weights_come_from_core() -> None:
    program = build()
    expected = init_params(program.spec.model, program.spec.seed)
    state = program.get_state()
    for key, value in expected.items():
        np.testing.assert_array_equal(state.params[key], value, err_msg=key)


def test_eval_and_predict_are_deterministic_and_do_not_train() -> None:
    program = build()
    x, y = data()
    before = program.get_state()
    first = program.predict_step((x, None))
    np.testing.assert_array_equal(first, program.predict_step(x))
    program.eval_step((x, y))
    assert_states_equal(before, program.get_state())


def test_training_reduces_loss() -> None:
    program = build(make_spec(optimizer={"name": "adam", "lr": 0.01}))
    x, y = data(64)
    first = program.metrics_to_host([program.eval_step((x, y))])["loss"]
    for _ in range(30):
        program.train_step((x, y))
    assert program.metrics_to_host([program.eval_step((x, y))])["loss"] < first


def test_native_init_draws_on_device() -> None:
    spec = make_spec([{"type": "Dense", "units": 300}], (200,))
    spec.model.init = "native"
    state = build(spec).get_state()
    kernel = state.params["dense_0/kernel"]
    limit = np.sqrt(6.0 / 500)
    assert kernel.shape == (200, 300) and np.abs(kernel).max() <= limit and kernel.std() > limit / 3
    assert not np.array_equal(kernel, init_params(spec.model, 0)["dense_0/kernel"])
    assert np.all(state.params["dense_0/bias"] == 0)


# -- canonical state ----------------------------------------------------------------------------


def test_canonical_layouts() -> None:
    layers = [
        {"type": "Conv1D", "filters": 4, "kernel_size": 3},
        {"type": "Reshape", "target_shape": [6, 4]},
        {"type": "Reshape", "target_shape": [2, 3, 4]},
        {"type": "Conv2D", "filters": 5, "kernel_size": [2, 3]},
        {"type": "Flatten"},
        {"type": "Dense", "units": 2},
    ]
    program = build(make_spec(layers, (8, 7)))
    params = program.get_state().params
    assert params["conv1d_0/kernel"].shape == (3, 7, 4)
    assert params["conv2d_3/kernel"].shape == (2, 3, 4, 5)
    assert params["dense_5/kernel"].shape == (5, 2)
    modules = program.native_model.layers
    np.testing.assert_array_equal(
        params["conv1d_0/kernel"], modules[0].weight.detach().permute(2, 1, 0).numpy()
    )
    np.testing.assert_array_equal(
        params["conv2d_3/kernel"], modules[3].weight.detach().permute(2, 3, 1, 0).numpy()
    )
    np.testing.assert_array_equal(params["dense_5/kernel"], modules[5].weight.detach().numpy().T)


@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "adam"},
        {"name": "sgd", "momentum": 0.9},
        {"name": "sgd"},
        {"name": "rmsprop", "momentum": 0.5},
        {"name": "adamw"},
    ],
)
def test_state_round_trip(optimizer: dict[str, Any]) -> None:
    program = build(make_spec(optimizer=optimizer))
    x, y = data()
    for _ in range(2):
        program.train_step((x, y))
    state = program.get_state()
    assert state.step == 2 and "torch" in state.rng
    slots = {k.split("/", 1)[0] for k in state.optimizer}
    assert (
        slots
        == {
            "adam": {"m", "v"},
            "adamw": {"m", "v"},
            "sgd": {"momentum"} if optimizer.get("momentum") else set(),
            "rmsprop": {"rms", "momentum"},
        }[optimizer["name"]]
    )
    program.set_state(state)
    assert_states_equal(state, program.get_state())


def test_resume_is_bit_exact_on_cpu() -> None:
    x, y = data(32)
    first = build()
    for _ in range(3):
        first.train_step((x, y))
    saved = first.get_state()
    for _ in range(3):
        first.train_step((x, y))
    second = build(seed=99)
    second.set_state(saved)
    for _ in range(3):
        second.train_step((x, y))
    assert_states_equal(first.get_state(), second.get_state())


def test_foreign_state_without_rng_or_optimizer() -> None:
    program = build()
    x, y = data()
    program.train_step((x, y))
    params = {k: v + 0.5 for k, v in program.get_state().params.items()}
    program.set_state(CanonicalState(params=params, step=7))
    state = program.get_state()
    assert state.optimizer == {} and state.step == 7
    for key in params:
        np.testing.assert_array_equal(state.params[key], params[key])
    program.train_step((x, y))
    assert program.get_state().step == 8


def test_set_state_rejects_mismatches() -> None:
    program = build()
    state = program.get_state()
    wrong = dict(state.params)
    wrong["dense_5/kernel"] = np.zeros((3, 3), np.float32)
    with pytest.raises(CheckpointError, match="dense_5/kernel"):
        program.set_state(CanonicalState(params=wrong))
    with pytest.raises(CheckpointError, match="not in the checkpoint"):
        program.set_state(
            CanonicalState(params={k: v for k, v in state.params.items() if "dense" not in k})
        )
    program.train_step(data())
    slots = program.get_state().optimizer
    with pytest.raises(CheckpointError, match="optimizer state"):
        program.set_state(
            CanonicalState(
                params=state.params,
                optimizer={k: v for k, v in slots.items() if k.startswith("m/")},
                step=1,
            )
        )


# -- native models ------------------------------------------------------------------------------


def test_native_module_escape_hatch() -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )
    spec = validate_spec(
        {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "metrics": ["accuracy"]}
    )
    program = build(spec, native_model=module)
    assert program.native_model is module
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)), rng.integers(0, 3, size=64)
    first = program.metrics_to_host([program.eval_step((x, y))])["loss"]
    for _ in range(20):
        program.train_step((x, y))
    assert program.metrics_to_host([program.eval_step((x, y))])["loss"] < first
    state = program.get_state()
    assert {"0.weight", "0.bias", "1.running_mean", "1.num_batches_tracked", "3.weight"} <= set(
        state.params
    )
    assert state.params["0.weight"].shape == (16, 4) and "momentum/0.weight" in state.optimizer
    program.set_state(state)
    assert_states_equal(state, program.get_state())


# -- precisions and compile ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [
        ("32", torch.float32),
        ("64", torch.float64),
        ("bf16-mixed", torch.float32),
        ("16-mixed", torch.float32),
        ("bf16-true", torch.bfloat16),
    ],
)
def test_precisions_train(precision: str, dtype: Any) -> None:
    program = build(make_spec(optimizer={"name": "adam", "lr": 0.01}), precision=precision)
    assert program.params[0].dtype == dtype
    assert (program.scaler is not None) == (precision == "16-mixed")
    x, y = data(32)
    outputs = [program.train_step((x, y)) for _ in range(5)]
    values = program.metrics_to_host(outputs)
    assert np.isfinite(values["loss"])
    state = program.get_state()
    assert all(
        v.dtype == (np.float64 if precision == "64" else np.float32) for v in state.params.values()
    )
    assert program.predict_step(x).dtype == (np.float64 if precision == "64" else np.float32)


def test_float64_matches_reference_forward() -> None:
    from crosstrain.nn.model import forward

    program = build(precision="64")
    x, _ = data()
    state = program.get_state()
    expected = forward(
        program.spec.model,
        {k: v.astype(np.float64) for k, v in state.params.items()},
        x.astype(np.float64),
    )
    np.testing.assert_allclose(program.predict_step(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compiled_steps_match_eager() -> None:
    spec = make_spec(
        [{"type": "Dense", "units": 8, "activation": "relu"}, {"type": "Dense", "units": 3}], (5,)
    )
    eager = build(spec)
    compiled = build(
        spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"compile": True})})
    )
    x, y = data(16, (5,))
    for _ in range(3):
        a, b = eager.train_step((x, y)), compiled.train_step((x, y))
    assert compiled.metrics_to_host([b])["loss"] == pytest.approx(
        eager.metrics_to_host([a])["loss"], rel=1e-5
    )
    np.testing.assert_allclose(
        compiled.predict_step(x), eager.predict_step(x), rtol=1e-5, atol=1e-6
    )
