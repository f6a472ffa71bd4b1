"""Parameter groups (`optimizer.param_groups`, `optimizer.decay: matrices_only`): resolved once
in core into per-parameter `ParamOptions`, applied by every backend's optimizer as the numpy
`reference_step` does."""

from __future__ import annotations

import crosstrain as ct
import numpy as np
import pytest
from crosstrain.errors import SpecError
from crosstrain.nn.model import init_params, param_specs
from crosstrain.nn.optimizers import ParamOptions, reference_step, resolve_param_options

BACKENDS = ["torch", "jax", "keras"]  # keras: the engine of this process (tensorflow by default)


def _model() -> dict:
    return {
        "input_shape": [5],
        "layers": [
            {"type": "Dense", "units": 6},
            {"type": "LayerNorm"},
            {"type": "ReLU"},
            {"type": "Dense", "units": 3},
        ],
    }


def _spec(**optimizer: object) -> dict:
    return {
        "seed": 1,
        "model": _model(),
        "loss": "cross_entropy",
        "optimizer": {"name": "adamw", "lr": 0.05, "weight_decay": 0.5, **optimizer},
        "data": {"batch_size": 8},
        "trainer": {"max_epochs": 1, "progress": False, "loggers": []},
    }


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(24, 5)).astype(np.float32), rng.integers(0, 3, 24)


def test_matrices_only_decays_kernels_and_embeddings_not_biases_or_norms() -> None:
    spec = ct.load_spec(
        {
            **_spec(decay="matrices_only"),
            "model": {
                "input_shape": [4],
                "layers": [
                    {"type": "Embedding", "vocab_size": 10, "dim": 6},
                    {"type": "LayerNorm"},
                    {"type": "Dense", "units": 3},
                ],
            },
        }
    )
    options = resolve_param_options(spec.optimizer, spec.model)
    no_decay = ParamOptions(1.0, 0.0)
    assert options == {
        "layernorm_1/gamma": no_decay,
        "layernorm_1/beta": no_decay,
        "dense_2/bias": no_decay,
    }, options  # nanoGPT decays `wte` (2-d): the embedding table keeps the optimizer's decay


def test_first_matching_group_wins_and_groups_combine_with_the_decay_rule() -> None:
    spec = ct.load_spec(
        _spec(
            decay="matrices_only",
            param_groups=[
                {"match": "^dense_0/", "lr_multiplier": 0.5},
                {"kind": "bias", "lr_multiplier": 2.0, "weight_decay": 0.1},
                {"kind": "norm", "lr_multiplier": 0.0},
            ],
        )
    )
    options = resolve_param_options(spec.optimizer, spec.model)
    assert options == {
        "dense_0/kernel": ParamOptions(0.5, None),
        "dense_0/bias": ParamOptions(0.5, 0.0),  # group 0 wins; matrices_only: no decay
        "layernorm_1/gamma": ParamOptions(0.0, 0.0),
        "layernorm_1/beta": ParamOptions(0.0, 0.0),
        "dense_3/bias": ParamOptions(2.0, 0.1),
    }, options
    assert resolve_param_options(ct.load_spec(_spec()).optimizer, spec.model) == {}


@pytest.mark.parametrize(
    ("groups", "where", "text"),
    [
        ([{"kind": "weights"}], "optimizer.param_groups[0].kind", "bias"),
        ([{"kind": "bias"}, {"match": "^nope/"}], "optimizer.param_groups[1]", "group 1"),
        ([{"match": "("}], "optimizer.param_groups[0].match", "regular expression"),
        ([{"kind": "bias", "lr_multiplier": -1}], "optimizer.param_groups[0].lr_multiplier", ""),
        ([{"lr_multiplier": 2}], "optimizer.param_groups[0]", "match"),
        ([{"kind": "bias", "wd": 0}], "optimizer.param_groups[0].wd", ""),
    ],
)
def test_bad_groups_are_one_spec_error_naming_the_group(groups, where, text) -> None:
    with pytest.raises(SpecError) as err:
        ct.load_spec(_spec(param_groups=groups))
    issues = err.value.issues
    assert len(issues) == 1, issues
    assert issues[0].path == where and text in issues[0].message, issues[0]


def test_bad_decay_rule_is_refused() -> None:
    with pytest.raises(SpecError, match="optimizer.decay"):
        ct.load_spec(_spec(decay="matrices"))


def test_matrices_only_leaves_biases_as_without_decay_in_the_reference() -> None:
    """Same gradients for N AdamW steps: biases and norm scales equal a run without weight
    decay, kernels differ."""
    spec = ct.load_spec(_spec(decay="matrices_only"))
    options = resolve_param_options(spec.optimizer, spec.model)
    rng = np.random.default_rng(2)
    trainable = {n for n, s in param_specs(spec.model).items() if s.trainable}
    params = {k: v for k, v in init_params(spec.model, 1).items() if k in trainable}
    plain = spec.optimizer.model_copy(update={"weight_decay": 0.0, "decay": None})
    a, b, sa, sb = dict(params), dict(params), {}, {}
    for step in range(5):
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        a, sa = reference_step(spec.optimizer, a, grads, sa, step, overrides=options)
        b, sb = reference_step(plain, b, grads, sb, step)
    for name in params:
        if name.endswith("/kernel"):
            assert np.abs(a[name] - b[name]).max() > 1e-3, name
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _linear(backend_opt: dict) -> ct.Spec:
    return ct.load_spec(
        {
            "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 3}]},
            "loss": "mse",
            "optimizer": backend_opt,
            "trainer": {"progress": False},
        }
    )


def _grads(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradient of `mean((x @ W + b - y)^2)` in float64."""
    w, b = params["dense_0/kernel"].astype(np.float64), params["dense_0/bias"].astype(np.float64)
    dout = 2.0 * (x @ w + b - y) / y.size
    return {
        "dense_0/kernel": (x.T @ dout).astype(np.float32),
        "dense_0/bias": dout.sum(axis=0).astype(np.float32),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_groups_match_reference_step(backend: str, name: str) -> None:
    """torch's native path (torch.optim parameter groups), jax and Keras against the reference."""
    pytest.importorskip(backend.split(":")[-1])
    opt = {
        "name": name,
        "lr": 0.05,
        "weight_decay": 0.2,
        "param_groups": [{"kind": "bias", "lr_multiplier": 3.0, "weight_decay": 0.0}],
        "decay": "matrices_only",
    }
    if name == "sgd":
        opt["momentum"] = 0.9
    spec = _linear(opt)
    options = resolve_param_options(spec.optimizer, spec.model)
    assert options == {"dense_0/bias": ParamOptions(3.0, 0.0)}
    program = ct.build(spec, backend=backend)
    params = program.get_state().params
    slots: dict = {}
    rng = np.random.default_rng(0)
    for step in range(3):
        x = rng.normal(size=(8, 4)).astype(np.float32)
        y = rng.normal(size=(8, 3)).astype(np.float32) * 5
        grads = _grads(params, x.astype(np.float64), y)
        params, slots = reference_step(
            spec.optimizer, params, grads, slots, step, overrides=options
        )
        program.train_step((x, y))
        state = program.get_state()
        for key, value in params.items():
            atol = 1e-6 * float(np.abs(value).max()) + 1e-9
            np.testing.assert_allclose(
                state.params[key], value, rtol=1e-5, atol=atol, err_msg=f"{step}: {key}"
            )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zero_lr_group_leaves_its_parameters_unchanged(backend: str) -> None:
    pytest.importorskip(backend.split(":")[-1])
    groups = [{"kind": "norm", "lr_multiplier": 0.0}, {"match": "^dense_0/", "lr_multiplier": 0}]
    spec = ct.load_spec(_spec(param_groups=groups))
    before = ct.build(spec, backend=backend).get_state().params
    after = ct.fit(spec, backend=backend, data=_data(), run_dir=False).state.params
    for name, value in before.items():
        if name.startswith(("dense_0/", "layernorm_1/")):
            np.testing.assert_array_equal(after[name], value, err_msg=name)
        else:
            assert np.abs(after[name] - value).max() > 1e-3, name


def test_torch_rule_path_groups_match_reference_step(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from crosstrain.backends.torch import optim

    monkeypatch.setattr(optim, "NATIVE_FAST_PATHS", False)
    test_groups_match_reference_step("torch", "adamw")


def _keras_torch_checks() -> bool:
    for name in ("adamw", "sgd"):
        test_groups_match_reference_step("keras:torch", name)
    test_a_zero_lr_group_leaves_its_parameters_unchanged("keras:torch")
    return True


def test_keras_torch_engine_steps_aside_from_its_foreach_path() -> None:
    """Keras's torch engine (its own process: one engine per process) runs the per-variable
    rule with the groups instead of its foreach kernels."""
    pytest.importorskip("torch")
    from conftest import call_in_fresh_python

    assert call_in_fresh_python("test_param_groups", "_keras_torch_checks") is True


def test_torch_groups_state_round_trips_into_a_fresh_program() -> None:
    """The optimizer state of torch.optim parameter groups moves to a new program and on."""
    pytest.importorskip("torch")
    groups = [{"kind": "bias", "lr_multiplier": 2.0, "weight_decay": 0.0}]
    spec = ct.load_spec(_spec(param_groups=groups))
    x, y = _data()
    first = ct.build(spec, backend="torch")
    torch_optimizer = first.optimizer
    assert type(torch_optimizer).__name__ == "AdamW", type(torch_optimizer)  # the fast path
    assert [g["lr_scale"] for g in torch_optimizer.param_groups] == [1.0, 2.0]
    first.train_step((x[:8], y[:8]))
    second = ct.build(spec, backend="torch")
    second.set_state(first.get_state())
    first.train_step((x[8:16], y[8:16]))
    second.train_step((x[8:16], y[8:16]))
    a, b = first.get_state(), second.get_state()
    for name, value in a.params.items():
        np.testing.assert_array_equal(b.params[name], value, err_msg=name)
    for name, value in a.optimizer.items():
        np.testing.assert_array_equal(b.optimizer[name], value, err_msg=name)
