"""torch's gradients equal central differences of the numpy reference forward (float64)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crosstrain.backends.torch.model import build_module  # noqa: E402
from crosstrain.backends.torch.state import load_params, to_canonical, trainable  # noqa: E402
from crosstrain.nn.model import forward, param_specs  # noqa: E402
from crosstrain.spec.schema import validate_spec  # noqa: E402

EPS = 1e-6
ENTRIES = 4

CASES: dict[str, tuple[list[Any], tuple[int, ...]]] = {
    "dense_gelu": ([{"type": "Dense", "units": 5, "activation": "gelu"}], (4,)),
    "conv2d_same_strided": (
        [{"type": "Conv2D", "filters": 3, "kernel_size": 3, "strides": 2, "padding": "same"}],
        (5, 6, 2),
    ),
    "conv1d_valid_strided": (
        [{"type": "Conv1D", "filters": 3, "kernel_size": 2, "strides": 2, "padding": "valid"}],
        (7, 2),
    ),
    "pools_same": (
        [
            {"type": "Conv2D", "filters": 2, "kernel_size": 1},
            {"type": "MaxPool2D", "pool_size": 2, "padding": "same"},
            {"type": "AvgPool2D", "pool_size": 2, "padding": "same"},
        ],
        (5, 5, 2),
    ),
    "batchnorm_training": ([{"type": "Dense", "units": 3}, {"type": "BatchNorm"}], (4,)),
    "layernorm_residual": (
        [{"type": "Residual", "layers": [{"type": "LayerNorm"}, {"type": "Dense", "units": 4}]}],
        (3, 4),
    ),
    "attention_causal": (
        [{"type": "MultiHeadSelfAttention", "num_heads": 2, "head_dim": 3, "causal": True}],
        (4, 5),
    ),
    "embedding_flatten": (
        [{"type": "Embedding", "vocab_size": 6, "dim": 3}, {"type": "Flatten"}],
        (4,),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_finite_differences_of_the_reference(case: str) -> None:
    layers, input_shape = CASES[case]
    data: dict[str, Any] = {"input_shape": list(input_shape), "layers": layers}
    rng = np.random.default_rng(0)
    if case.startswith("embedding"):
        data["input_dtype"] = "int64"
        x = rng.integers(0, 6, size=(3, *input_shape))
    else:
        x = rng.normal(size=(6, *input_shape))
    model = validate_spec({"model": data}).model
    params = {name: rng.normal(0.0, 0.5, spec.shape) for name, spec in param_specs(model).items()}
    for name in params:
        if name.endswith("moving_variance"):
            params[name] = np.abs(params[name]) + 0.5
    training = case == "batchnorm_training"
    weights = rng.normal(size=forward(model, params, x, training=training).shape)

    module, refs = build_module(model, torch.device("cpu"), torch.float64)
    load_params(refs, params)
    module.train(training)
    out = module(torch.from_numpy(x))
    (out * torch.from_numpy(weights)).sum().backward()

    def objective(values: dict[str, np.ndarray]) -> float:
        return float(np.sum(forward(model, values, x, training=training) * weights))

    for ref in trainable(refs):
        grad = to_canonical(ref.tensor.grad, ref.layout)
        flat = params[ref.name].reshape(-1)
        for index in rng.choice(flat.size, size=min(ENTRIES, flat.size), replace=False):
            shifted = []
            for sign in (1.0, -1.0):
                values = {k: v.copy() for k, v in params.items()}
                values[ref.name].reshape(-1)[index] += sign * EPS
                shifted.append(objective(values))
            numeric = (shifted[0] - shifted[1]) / (2 * EPS)
            assert grad.reshape(-1)[index] == pytest.approx(numeric, rel=1e-5, abs=1e-7), (
                ref.name,
                int(index),
            )
