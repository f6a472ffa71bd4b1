"""The torch modules reproduce the numpy reference forward of every layer from canonical params."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crosstrain.backends.torch.model import build_module  # noqa: E402
from crosstrain.backends.torch.state import load_params, params_to_canonical  # noqa: E402
from crosstrain.nn.layers import Layer, ParamSpec  # noqa: E402
from crosstrain.nn.model import forward, param_specs, plan  # noqa: E402
from crosstrain.spec.schema import validate_spec  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def random_params(model: Any, seed: int = 1) -> dict[str, np.ndarray]:
    """Non-trivial canonical values (biases and gammas too); variances positive."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in param_specs(model).items():
        value = rng.normal(0.0, 0.5, spec.shape).astype(np.float32)
        out[name] = np.abs(value) + 0.5 if name.endswith("moving_variance") else value
    return out


def compare(
    layers: list[Any],
    input_shape: tuple[int, ...],
    x: np.ndarray | None = None,
    training: bool = False,
    input_dtype: str | None = None,
    batch: int = 3,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """(torch output, numpy reference output, model) for the same canonical params and input."""
    model_data: dict[str, Any] = {"input_shape": list(input_shape), "layers": layers}
    if input_dtype:
        model_data["input_dtype"] = input_dtype
    model = validate_spec({"model": model_data}).model
    if x is None:
        x = np.random.default_rng(0).normal(size=(batch, *input_shape)).astype(np.float32)
    params = random_params(model)
    module, refs = build_module(model, torch.device("cpu"), torch.float32)
    load_params(refs, params)
    module.train(training)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    expected = forward(model, params, x, training=training)
    assert got.shape == (x.shape[0], *plan(model)[-1].output_shape)
    return got, expected, (module, refs, params)


def assert_parity(layers: list[Any], input_shape: tuple[int, ...], **kwargs: Any) -> None:
    got, expected, _ = compare(layers, input_shape, **kwargs)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "activation", [None, "linear", "relu", "gelu", "tanh", "sigmoid", "softmax"]
)
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense(activation: str | None, use_bias: bool) -> None:
    assert_parity(
        [{"type": "Dense", "units": 7, "activation": activation, "use_bias": use_bias}], (5,)
    )


def test_dense_on_sequences() -> None:
    assert_parity([{"type": "Dense", "units": 4}], (6, 5))


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", [1, 2, (2, 3)])
@pytest.mark.parametrize("kernel_size", [3, (2, 4), 1])
def test_conv2d(padding: str, strides: Any, kernel_size: Any) -> None:
    layer = {
        "type": "Conv2D",
        "filters": 4,
        "kernel_size": kernel_size,
        "strides": strides,
        "padding": padding,
    }
    assert_parity([layer], (7, 9, 3))


def test_conv2d_without_bias_with_activation() -> None:
    layer = {
        "type": "Conv2D",
        "filters": 5,
        "kernel_size": 3,
        "padding": "same",
        "use_bias": False,
        "activation": "relu",
    }
    assert_parity([layer], (6, 6, 2))


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", [1, 2, 3])
@pytest.mark.parametrize("kernel_size", [1, 2, 3])
def test_conv1d(padding: str, strides: int, kernel_size: int) -> None:
    layer = {
        "type": "Conv1D",
        "filters": 4,
        "kernel_size": kernel_size,
        "strides": strides,
        "padding": padding,
    }
    assert_parity([layer], (10, 3))


@pytest.mark.parametrize("kind", ["MaxPool2D", "AvgPool2D"])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize(
    ("pool_size", "strides"), [(2, None), (3, None), (3, 1), (2, 3), ((2, 3), (1, 2))]
)
def test_pooling(kind: str, padding: str, pool_size: Any, strides: Any) -> None:
    layer = {"type": kind, "pool_size": pool_size, "strides": strides, "padding": padding}
    assert_parity([layer], (7, 9, 3))


@pytest.mark.parametrize("input_shape", [(5, 6, 3), (7, 4)])
def test_global_avg_pool(input_shape: tuple[int, ...]) -> None:
    assert_parity([{"type": "GlobalAvgPool"}], input_shape)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("input_shape", [(6,), (4, 5, 3)])
def test_batchnorm(training: bool, input_shape: tuple[int, ...]) -> None:
    assert_parity(
        [{"type": "BatchNorm", "momentum": 0.9, "epsilon": 1e-3}],
        input_shape,
        training=training,
        batch=8,
    )


def test_batchnorm_moving_statistics_follow_keras() -> None:
    x = np.random.default_rng(3).normal(2.0, 3.0, size=(16, 4, 4, 3)).astype(np.float32)
    _, _, (module, refs, params) = compare(
        [{"type": "BatchNorm", "momentum": 0.9}], (4, 4, 3), x=x, training=True
    )
    state = params_to_canonical(refs)
    axes = (0, 1, 2)
    mean = 0.9 * params["batchnorm_0/moving_mean"] + 0.1 * x.mean(axis=axes)
    var = 0.9 * params["batchnorm_0/moving_variance"] + 0.1 * x.var(axis=axes)
    np.testing.assert_allclose(state["batchnorm_0/moving_mean"], mean, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(state["batchnorm_0/moving_variance"], var, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(state["batchnorm_0/gamma"], params["batchnorm_0/gamma"])


@pytest.mark.parametrize(("input_shape", "batch"), [((5, 3), 6), ((4, 4, 3), 5), ((3,), 1)])
def test_fused_batchnorm_matches_keras_maths_over_steps(
    input_shape: tuple[int, ...], batch: int
) -> None:
    """Three training forwards (fused path; a one-row batch takes the op-by-op one): moving
    statistics with the biased variance, outputs and gradients as the numpy/Keras maths."""
    x = np.random.default_rng(4).normal(1.0, 2.0, size=(3, batch, *input_shape))
    x = x.astype(np.float32)
    _, _, (module, refs, params) = compare(
        [{"type": "BatchNorm", "momentum": 0.8, "epsilon": 1e-3}], input_shape, training=True
    )
    load_params(refs, params)
    mean, var = params["batchnorm_0/moving_mean"], params["batchnorm_0/moving_variance"]
    gamma, beta = params["batchnorm_0/gamma"], params["batchnorm_0/beta"]
    axes = tuple(range(len(input_shape)))
    for step in x:
        module.zero_grad()
        inputs = torch.from_numpy(step).requires_grad_()
        out = module(inputs)
        (out * out).sum().backward()
        mu, sigma2 = step.mean(axis=axes), step.var(axis=axes)
        expected = (step - mu) / np.sqrt(sigma2 + 1e-3) * gamma + beta
        np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-4, atol=1e-5)
        mean, var = 0.8 * mean + 0.2 * mu, 0.8 * var + 0.2 * sigma2
    state = params_to_canonical(refs)
    np.testing.assert_allclose(state["batchnorm_0/moving_mean"], mean, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(state["batchnorm_0/moving_variance"], var, rtol=RTOL, atol=ATOL)
    layer = module.layers[0] if hasattr(module, "layers") else module
    fused = (layer.gamma.grad.clone(), inputs.grad.clone())
    layer.gamma.grad, inputs.grad = None, None
    out = layer._unfused(inputs)
    (out * out).sum().backward()
    np.testing.assert_allclose(fused[0], layer.gamma.grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused[1], inputs.grad, rtol=1e-4, atol=1e-4)


def test_batchnorm_eval_leaves_moving_statistics() -> None:
    _, _, (module, refs, params) = compare([{"type": "BatchNorm"}], (5,), training=False)
    np.testing.assert_array_equal(
        params_to_canonical(refs)["batchnorm_0/moving_mean"], params["batchnorm_0/moving_mean"]
    )


@pytest.mark.parametrize("epsilon", [1e-3, 1e-5])
def test_layernorm(epsilon: float) -> None:
    assert_parity([{"type": "LayerNorm", "epsilon": epsilon}], (4, 6))


def test_dropout_is_identity_in_eval_and_rescales_in_training() -> None:
    assert_parity([{"type": "Dropout", "rate": 0.5}], (50,))
    torch.manual_seed(0)
    x = np.ones((40, 50), np.float32)
    got, _, _ = compare([{"type": "Dropout", "rate": 0.25}], (50,), x=x, training=False)
    model = validate_spec(
        {"model": {"input_shape": [50], "layers": [{"type": "Dropout", "rate": 0.25}]}}
    ).model
    module, _ = build_module(model, torch.device("cpu"), torch.float32)
    out = module.train()(torch.from_numpy(x)).numpy()
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1.0 / 0.75)
    assert 0.2 < 1.0 - kept.mean() < 0.3


def test_embedding_with_integer_input() -> None:
    x = np.random.default_rng(0).integers(0, 11, size=(3, 7)).astype(np.int64)
    assert_parity([{"type": "Embedding", "vocab_size": 11, "dim": 4}], (7,), x=x)


def test_flatten_keeps_channels_last_order() -> None:
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    got, expected, _ = compare([{"type": "Flatten"}], (4, 5, 3), x=x)
    np.testing.assert_array_equal(got, expected)


def test_reshape() -> None:
    assert_parity([{"type": "Reshape", "target_shape": [-1, 6]}], (4, 3))


@pytest.mark.parametrize("name", ["ReLU", "GELU", "Tanh", "Sigmoid", "Softmax"])
def test_activation_layers(name: str) -> None:
    assert_parity([{"type": name}], (3, 8))


def test_residual_and_nested_sequential() -> None:
    block = {
        "type": "Residual",
        "layers": [
            {"type": "Dense", "units": 8, "activation": "gelu"},
            {
                "type": "Sequential",
                "layers": [{"type": "LayerNorm"}, {"type": "Dense", "units": 6}],
            },
        ],
    }
    got, expected, (_, refs, _) = compare([block, {"type": "Dense", "units": 2}], (6,))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    assert [r.name for r in refs][:3] == [
        "residual_0/dense_0/kernel",
        "residual_0/dense_0/bias",
        "residual_0/sequential_1/layernorm_0/gamma",
    ]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_self_attention(causal: bool, use_bias: bool) -> None:
    layer = {
        "type": "MultiHeadSelfAttention",
        "num_heads": 3,
        "head_dim": 4,
        "causal": causal,
        "use_bias": use_bias,
    }
    assert_parity([layer], (5, 6))


def test_transformer_block_model() -> None:
    layers = [
        {"type": "Embedding", "vocab_size": 20, "dim": 8},
        {
            "type": "Residual",
            "layers": [
                {"type": "LayerNorm"},
                {"type": "MultiHeadSelfAttention", "num_heads": 2, "head_dim": 4, "causal": True},
            ],
        },
        {
            "type": "Residual",
            "layers": [
                {"type": "LayerNorm"},
                {"type": "Dense", "units": 16, "activation": "gelu"},
                {"type": "Dense", "units": 8},
            ],
        },
        {"type": "GlobalAvgPool"},
        {"type": "Dense", "units": 3},
    ]
    x = np.random.default_rng(0).integers(0, 20, size=(4, 6))
    assert_parity(layers, (6,), x=x)


def test_convnet_model() -> None:
    layers = [
        {
            "type": "Conv2D",
            "filters": 6,
            "kernel_size": 3,
            "strides": 2,
            "padding": "same",
            "activation": "relu",
        },
        {"type": "BatchNorm"},
        {"type": "AvgPool2D", "pool_size": 2, "padding": "same"},
        {"type": "Conv2D", "filters": 4, "kernel_size": 2},
        {"type": "Flatten"},
        {"type": "Dropout", "rate": 0.3},
        {"type": "Dense", "units": 5, "activation": "softmax"},
    ]
    assert_parity(layers, (11, 10, 3))


class Scale(Layer):
    """A third-party layer: `x * scale` per channel, with a torch implementation."""

    positional: ClassVar = ()
    type: Literal["TestScale"] = "TestScale"

    def params(self, input_shape):
        return {"scale": ParamSpec((input_shape[-1],), "ones")}

    def forward(self, xp, params, x, training=False, rng=None):
        return x * params["scale"]

    def torch_module(self, input_shape):
        class ScaleModule(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.scale = torch.nn.Parameter(torch.ones(input_shape[-1]))

            def forward(self, x):
                return x * self.scale

        return ScaleModule()


def test_plugin_layer_through_torch_module() -> None:
    got, expected, (_, refs, _) = compare([{"type": "Dense", "units": 4}, Scale()], (3,))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    assert [r.name for r in refs][-1] == "testscale_1/scale"
