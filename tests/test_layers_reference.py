"""The neutral vocabulary in core: shape inference agrees with the numpy reference forward,
initialisation is seeded and per-name, canonical layouts are as documented."""

from __future__ import annotations

import crosstrain as ct
import numpy as np
import pytest
from crosstrain.nn.layers import BUILTIN_LAYERS
from crosstrain.nn.model import ModelSpec, forward, init_params, param_specs, plan

CASES = {
    "Dense": ((6,), [{"type": "Dense", "units": 4, "activation": "tanh"}]),
    "Dense3d": ((5, 6), [{"type": "Dense", "units": 4}]),
    "Conv1D": (
        (9, 3),
        [{"type": "Conv1D", "filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"}],
    ),
    "Conv2D": (
        (7, 7, 2),
        [{"type": "Conv2D", "filters": 3, "kernel_size": 3, "strides": 2, "padding": "same"}],
    ),
    "Conv2Dvalid": (
        (7, 6, 2),
        [{"type": "Conv2D", "filters": 3, "kernel_size": [3, 2], "padding": "valid"}],
    ),
    "MaxPool2D": ((7, 7, 2), [{"type": "MaxPool2D", "pool_size": 2, "padding": "same"}]),
    "AvgPool2D": (
        (7, 7, 2),
        [{"type": "AvgPool2D", "pool_size": 3, "strides": 2, "padding": "same"}],
    ),
    "GlobalAvgPool": ((4, 4, 3), [{"type": "GlobalAvgPool"}]),
    "BatchNorm": ((4, 4, 3), [{"type": "BatchNorm"}]),
    "LayerNorm": ((5, 6), [{"type": "LayerNorm"}]),
    "Dropout": ((6,), [{"type": "Dropout", "rate": 0.5}]),
    "Embedding": ((5,), [{"type": "Embedding", "vocab_size": 11, "dim": 4}]),
    "Flatten": ((3, 4, 2), [{"type": "Flatten"}]),
    "Reshape": ((12,), [{"type": "Reshape", "target_shape": [3, -1]}]),
    "ReLU": ((6,), [{"type": "ReLU"}]),
    "GELU": ((6,), [{"type": "GELU"}]),
    "Tanh": ((6,), [{"type": "Tanh"}]),
    "Sigmoid": ((6,), [{"type": "Sigmoid"}]),
    "Softmax": ((6,), [{"type": "Softmax"}]),
    "Residual": (
        (5, 6),
        [{"type": "Residual", "layers": [{"type": "LayerNorm"}, {"type": "Dense", "units": 6}]}],
    ),
    "MultiHeadSelfAttention": (
        (5, 8),
        [{"type": "MultiHeadSelfAttention", "num_heads": 2, "head_dim": 3, "causal": True}],
    ),
    "SiLU": ((6,), [{"type": "SiLU"}]),
    "GELUtanh": ((6,), [{"type": "GELU", "approximate": True}]),
    "PositionEmbedding": ((4, 3), [{"type": "PositionEmbedding", "sequence_length": 6}]),
    "RMSNorm": ((5, 6), [{"type": "RMSNorm"}]),
    "LSTM": ((5, 3), [{"type": "LSTM", "units": 4, "return_sequences": True}]),
    "GRU": ((5, 3), [{"type": "GRU", "units": 4}]),
    "MaxPool1D": ((7, 2), [{"type": "MaxPool1D", "pool_size": 2, "padding": "same"}]),
    "AvgPool1D": ((7, 2), [{"type": "AvgPool1D", "pool_size": 3, "strides": 2}]),
    "GlobalMaxPool": ((4, 4, 3), [{"type": "GlobalMaxPool"}]),
    "UpSampling2D": ((3, 2, 2), [{"type": "UpSampling2D", "size": 2}]),
    "Conv2DTranspose": (
        (3, 4, 2),
        [
            {
                "type": "Conv2DTranspose",
                "filters": 3,
                "kernel_size": 3,
                "strides": 2,
                "padding": "same",
            }
        ],
    ),
    "GatedMLP": ((5, 6), [{"type": "GatedMLP", "units": 8, "activation": "gelu"}]),
    "Attention-gqa-rope": (
        (5, 8),
        [
            {
                "type": "MultiHeadSelfAttention",
                "num_heads": 4,
                "num_kv_heads": 2,
                "head_dim": 2,
                "rope_theta": 10000.0,
                "dropout": 0.2,
            }
        ],
    ),
    "Sequential": (
        (6,),
        [{"type": "Sequential", "layers": [{"type": "Dense", "units": 3}, {"type": "ReLU"}]}],
    ),
}


def model_of(case: str) -> ModelSpec:
    shape, layers = CASES[case]
    return ModelSpec.model_validate({"input_shape": list(shape), "layers": layers})


def sample_input(model: ModelSpec, batch: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    if model.resolved_input_dtype == "int64":
        return rng.integers(0, model.layers[0].vocab_size, (batch, *model.input_shape))
    return rng.standard_normal((batch, *model.input_shape)).astype(np.float32)


def test_every_builtin_layer_has_a_case():
    covered = {layer["type"] for _, layers in CASES.values() for layer in layers}
    chain_layers = [cls for cls in BUILTIN_LAYERS if not cls.merge]  # merges: tests/test_graph.py
    assert {cls.model_fields["type"].default for cls in chain_layers} <= covered


@pytest.mark.parametrize("case", sorted(CASES))
def test_shape_inference_matches_the_reference_forward(case):
    model = model_of(case)
    params = init_params(model, seed=0)
    x = sample_input(model)
    for training in (False, True):
        y = forward(model, params, x, training=training, rng=np.random.default_rng(1))
        assert y.shape == (3, *plan(model)[-1].output_shape)
        assert y.dtype == np.float32


def test_canonical_layouts_and_names():
    model = ModelSpec.model_validate(
        {
            "input_shape": [8, 8, 3],
            "layers": [
                {"type": "Conv2D", "filters": 5, "kernel_size": 3},
                {"type": "Flatten"},
                {"type": "Residual", "layers": [{"type": "Dense", "units": 180}]},
                {"type": "Dense", "units": 7, "name": "head"},
            ],
        }
    )
    shapes = {name: spec.shape for name, spec in param_specs(model).items()}
    assert shapes == {
        "conv2d_0/kernel": (3, 3, 3, 5),
        "conv2d_0/bias": (5,),
        "residual_2/dense_0/kernel": (180, 180),
        "residual_2/dense_0/bias": (180,),
        "head/kernel": (180, 7),
        "head/bias": (7,),
    }


def test_initialisation_is_seeded_and_keyed_by_name():
    model = model_of("Residual")
    a, b, c = init_params(model, 0), init_params(model, 0), init_params(model, 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["residual_0/dense_1/kernel"], c["residual_0/dense_1/kernel"])
    limit = np.sqrt(6 / 12)
    assert np.abs(a["residual_0/dense_1/kernel"]).max() <= limit
    assert np.all(a["residual_0/layernorm_0/gamma"] == 1)


def test_reference_math_spot_checks():
    dense = ct.layers.Dense(2)
    params = {
        "kernel": np.array([[1.0, 0.0], [0.0, 2.0]], np.float32),
        "bias": np.array([0.5, 0.0], np.float32),
    }
    np.testing.assert_allclose(
        dense.forward(np, params, np.array([[1.0, 1.0]], np.float32)), [[1.5, 2.0]]
    )
    pool = ct.layers.MaxPool2D(2)
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(pool.forward(np, {}, x)[0, :, :, 0], [[5, 7], [13, 15]])
    avg = ct.layers.AvgPool2D(2, padding="same")
    x3 = np.ones((1, 3, 3, 1), np.float32)
    np.testing.assert_allclose(avg.forward(np, {}, x3), np.ones((1, 2, 2, 1)))


def test_bad_shapes_are_spec_errors():
    with pytest.raises(
        ct.SpecError, match=r"model.layers\[1\]: Reshape cannot take input shape \(6,\)"
    ):
        ct.load_spec(
            {
                "model": {
                    "input_shape": [6],
                    "layers": [{"type": "ReLU"}, {"type": "Reshape", "target_shape": [4, 2]}],
                }
            }
        )
