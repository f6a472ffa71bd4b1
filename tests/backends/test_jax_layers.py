"""JAX backend, layer by layer: forward equals the numpy reference (and torch), gradients equal torch's."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")

import crosstrain as ct
from crosstrain.nn.layers import Layer, ParamSpec
from crosstrain.nn.model import forward, param_specs
from layer_cases import LAYER_CASES, random_inputs, random_state

CASES = {
    k: v
    for k, v in LAYER_CASES.items()
    if k not in {"global_avg_pool_3d", "dense_gelu_no_bias", "dense_tanh"}
}
BATCH = 4


def _spec(name: str, lead: bool = False) -> ct.Spec:
    """The case's model; `lead` puts a shape-keeping Dense first, so every layer sees gradients
    and the model has something to train."""
    shape, layers = CASES[name]
    if lead and name != "embedding":
        layers = [{"type": "Dense", "units": shape[-1], "name": "lead"}, *layers]
    data = {
        "model": {"input_shape": shape, "layers": layers},
        "loss": "mse",
        "optimizer": {"name": "sgd", "lr": 1.0},
        "trainer": {"progress": False},
    }
    return ct.load_spec(data)


def _torch_or_skip() -> None:
    try:
        ct.build(_spec("dense"), backend="torch")
    except Exception as err:  # the reference backend is built in parallel; say why it is missing
        pytest.skip(f"torch backend not usable yet: {type(err).__name__}: {err}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_matches_numpy_reference(case: str) -> None:
    spec = _spec(case)
    state = random_state(spec)
    program = ct.build(spec, backend="jax")
    program.set_state(state)
    x = random_inputs(spec)
    expected = forward(spec.model, state.params, x)
    np.testing.assert_allclose(program.predict_step((x, None)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_matches_torch(case: str) -> None:
    _torch_or_skip()
    spec = _spec(case, lead=True)
    state = random_state(spec)
    x = random_inputs(spec)
    outputs = []
    for backend in ("jax", "torch"):
        program = ct.build(spec, backend=backend)
        program.set_state(state)
        outputs.append(program.predict_step((x, None)))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


def _one_sgd_step(
    spec: ct.Spec, backend: str, state: ct.CanonicalState, x: np.ndarray, y: np.ndarray
) -> tuple[ct.CanonicalState, float]:
    program = ct.build(spec, backend=backend)
    program.set_state(state)
    loss = program.metrics_to_host([program.train_step((x, y))])["loss"]
    return program.get_state(), loss


@pytest.mark.parametrize("case", sorted(set(CASES) - {"dropout"}))
def test_gradients_match_torch(case: str) -> None:
    """SGD with lr 1 from the same weights: `before - after` is the gradient; BatchNorm runs on batch statistics."""
    _torch_or_skip()
    spec = _spec(case, lead=True)
    state = random_state(spec)
    x = random_inputs(spec)
    out_shape = ct.build(spec, backend="jax").predict_step((x, None)).shape
    y = np.random.default_rng(3).normal(size=out_shape).astype(np.float32)
    (jax_state, jax_loss), (torch_state, torch_loss) = (
        _one_sgd_step(spec, b, state, x, y) for b in ("jax", "torch")
    )
    np.testing.assert_allclose(jax_loss, torch_loss, rtol=1e-5)
    trainable = {n for n, p in param_specs(spec.model).items() if p.trainable}
    for name, before in state.params.items():
        if name in trainable:
            np.testing.assert_allclose(
                before - jax_state.params[name],
                before - torch_state.params[name],
                rtol=1e-4,
                atol=1e-6,
                err_msg=name,
            )
        else:
            np.testing.assert_allclose(
                jax_state.params[name], torch_state.params[name], rtol=1e-5, atol=1e-6, err_msg=name
            )


def test_batchnorm_training_statistics_follow_keras() -> None:
    spec = _spec("batchnorm")
    state = random_state(spec)
    x = random_inputs(spec)
    program = ct.build(spec, backend="jax")
    program.set_state(state)
    program.train_step((x, np.zeros((BATCH, 6, 4), np.float32)))
    after = program.get_state().params
    axes = (0, 1)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
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


def test_dropout_in_training_keeps_the_expected_share() -> None:
    spec = ct.load_spec(
        {
            "model": {
                "input_shape": [2000],
                "layers": [{"type": "Dropout", "rate": 0.25}, {"type": "Dense", "units": 1}],
            },
            "loss": "mse",
            "trainer": {"progress": False},
        }
    )
    program = ct.build(spec, backend="jax")
    from crosstrain.backends.jax.model import Model

    model = Model(
        spec.model,
        {
            "dense_1/kernel": np.zeros((2000, 1), np.float32),
            "dense_1/bias": np.zeros(1, np.float32),
        },
    )
    import jax

    x = np.ones((3, 2000), np.float32)
    dropped = np.asarray(model.layers["dropout_0"](x, train=True, key=jax.random.key(0)))
    assert set(np.unique(dropped)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((dropped == 0).mean() - 0.25) < 0.02
    assert program.predict_step((x, None)).shape == (3, 1)


class _Scale(Layer):
    """A third party's layer: `x * scale`, with its JAX implementation attached."""

    type: Literal["JaxTestScale"] = "JaxTestScale"

    def params(self, input_shape: tuple[int, ...]) -> dict[str, ParamSpec]:
        return {"scale": ParamSpec((input_shape[-1],), "ones")}

    def forward(self, xp, params, x, training=False, rng=None):
        return x * params["scale"]

    def jax_module(self, input_shape: tuple[int, ...]) -> object:
        import jax.numpy as jnp
        from flax import nnx

        class Scale(nnx.Module):
            def __init__(self) -> None:
                self.scale = nnx.Param(jnp.ones(input_shape[-1]))

            def __call__(self, x):
                return x * self.scale[...]

        return Scale()


@pytest.fixture
def scale_layer():
    table = ct.get_registry().layers
    table.add(_Scale)
    yield _Scale
    del table._entries["JaxTestScale"], table.owners["JaxTestScale"]


def test_plugin_layer_uses_its_jax_module(scale_layer: type[Layer]) -> None:
    spec = ct.load_spec(
        {
            "model": {
                "input_shape": [3],
                "layers": [{"type": "Dense", "units": 4}, {"type": "JaxTestScale"}],
            },
            "loss": "mse",
            "optimizer": {"name": "sgd", "lr": 0.1},
            "trainer": {"progress": False},
        }
    )
    assert "JaxTestScale" in ct.get_registry().backend("jax").capabilities().layers
    program = ct.build(spec, backend="jax")
    state = random_state(spec)
    program.set_state(state)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        program.predict_step((x, None)), forward(spec.model, state.params, x), rtol=1e-5, atol=1e-6
    )
    program.train_step((x, np.zeros((5, 4), np.float32)))
    assert not np.allclose(
        program.get_state().params["jaxtestscale_1/scale"], state.params["jaxtestscale_1/scale"]
    )
