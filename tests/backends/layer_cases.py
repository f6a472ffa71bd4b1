"""Layer cases shared by the JAX and Keras layer tests: name -> (input shape, layer list).

Each case is checked against the numpy reference forward (and torch) by
tests/backends/test_jax_layers.py and, once per Keras engine, by test_keras_engine.py.
"""

from __future__ import annotations

import crosstrain as ct
import numpy as np
from crosstrain.nn.model import param_specs

LAYER_CASES: dict[str, tuple[list[int], list[dict]]] = {
    "dense": ([7], [{"type": "Dense", "units": 5, "activation": "tanh"}]),
    "dense_no_bias_gelu": (
        [7],
        [{"type": "Dense", "units": 4, "use_bias": False, "activation": "gelu"}],
    ),
    "conv2d_same_stride2": (
        [7, 9, 3],
        [{"type": "Conv2D", "filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"}],
    ),
    "conv2d_valid_rect": (
        [8, 6, 2],
        [
            {
                "type": "Conv2D",
                "filters": 3,
                "kernel_size": [3, 2],
                "strides": [2, 1],
                "activation": "relu",
            }
        ],
    ),
    "conv1d_same": (
        [10, 4],
        [{"type": "Conv1D", "filters": 3, "kernel_size": 4, "strides": 3, "padding": "same"}],
    ),
    "conv1d_valid": ([10, 4], [{"type": "Conv1D", "filters": 2, "kernel_size": 3}]),
    "maxpool_same": (
        [7, 7, 2],
        [{"type": "MaxPool2D", "pool_size": 3, "strides": 2, "padding": "same"}],
    ),
    "maxpool_valid": ([6, 5, 2], [{"type": "MaxPool2D", "pool_size": 2}]),
    "avgpool_same": (
        [7, 7, 2],
        [{"type": "AvgPool2D", "pool_size": 3, "strides": 2, "padding": "same"}],
    ),
    "avgpool_valid": ([6, 6, 3], [{"type": "AvgPool2D", "pool_size": [2, 3]}]),
    "global_avg_pool_2d": ([5, 6, 3], [{"type": "GlobalAvgPool"}]),
    "global_avg_pool_1d": ([7, 3], [{"type": "GlobalAvgPool"}]),
    "batchnorm": ([6, 4], [{"type": "BatchNorm", "momentum": 0.9}]),
    "layernorm": ([5, 8], [{"type": "LayerNorm"}]),
    "dropout": ([6], [{"type": "Dropout", "rate": 0.5}]),
    "embedding": ([6], [{"type": "Embedding", "vocab_size": 11, "dim": 4}]),
    "flatten": ([3, 4, 2], [{"type": "Flatten"}]),
    "reshape": ([8, 3], [{"type": "Reshape", "target_shape": [4, -1]}]),
    "activations": ([9], [{"type": t} for t in ("ReLU", "GELU", "Tanh", "Sigmoid", "Softmax")]),
    "residual": (
        [8],
        [
            {
                "type": "Residual",
                "layers": [
                    {"type": "Dense", "units": 8},
                    {"type": "GELU"},
                    {"type": "Dense", "units": 8},
                ],
            }
        ],
    ),
    "mhsa": ([5, 6], [{"type": "MultiHeadSelfAttention", "num_heads": 2, "head_dim": 3}]),
    "mhsa_causal_in_residual": (
        [5, 6],
        [
            {
                "type": "Residual",
                "layers": [
                    {"type": "LayerNorm"},
                    {
                        "type": "MultiHeadSelfAttention",
                        "num_heads": 3,
                        "head_dim": 2,
                        "causal": True,
                    },
                ],
            }
        ],
    ),
    "sequential_nested": (
        [6],
        [
            {
                "type": "Sequential",
                "layers": [
                    {"type": "Dense", "units": 5, "name": "inner"},
                    {"type": "Sequential", "layers": [{"type": "Dense", "units": 3}]},
                ],
            }
        ],
    ),
    "dense_tanh": ([7], [{"type": "Dense", "units": 5, "activation": "tanh"}]),
    "dense_gelu_no_bias": (
        [7],
        [{"type": "Dense", "units": 4, "use_bias": False, "activation": "gelu"}],
    ),
    "global_avg_pool_3d": ([2, 3, 4, 3], [{"type": "GlobalAvgPool"}]),
    "llama_block": (
        [6, 8],
        [
            {
                "type": "Residual",
                "layers": [
                    {"type": "RMSNorm", "epsilon": 1e-5},
                    {
                        "type": "MultiHeadSelfAttention",
                        "num_heads": 4,
                        "num_kv_heads": 2,
                        "head_dim": 4,
                        "causal": True,
                        "use_bias": False,
                        "rope_theta": 10000.0,
                    },
                ],
            },
            {
                "type": "Residual",
                "layers": [{"type": "RMSNorm"}, {"type": "GatedMLP", "units": 12}],
            },
        ],
    ),
    "gpt2_bits": (
        [5, 6],
        [
            {"type": "Residual", "layers": [{"type": "PositionEmbedding", "sequence_length": 8}]},
            {"type": "GELU", "approximate": True},
            {"type": "GatedMLP", "units": 4, "activation": "gelu", "use_bias": True},
            {"type": "SiLU"},
        ],
    ),
    "recurrent": (
        [6, 3],
        [
            {"type": "LSTM", "units": 4, "return_sequences": True},
            {"type": "GRU", "units": 3},
        ],
    ),
    "pool_1d": (
        [9, 3],
        [
            {"type": "MaxPool1D", "pool_size": 3, "strides": 2, "padding": "same"},
            {"type": "AvgPool1D", "pool_size": 2, "padding": "same"},
            {"type": "GlobalMaxPool"},
        ],
    ),
    "upsampling": (
        [3, 2, 2],
        [{"type": "UpSampling2D", "size": [2, 3]}, {"type": "GlobalMaxPool"}],
    ),
    "conv_transpose": (
        [3, 4, 2],
        [
            {
                "type": "Conv2DTranspose",
                "filters": 3,
                "kernel_size": 3,
                "strides": 2,
                "padding": "same",
            },
            {"type": "Conv2DTranspose", "filters": 2, "kernel_size": [2, 4], "strides": [1, 3]},
            {
                "type": "Conv2DTranspose",
                "filters": 2,
                "kernel_size": 1,
                "strides": 2,
                "padding": "same",
            },
            {"type": "GlobalAvgPool"},
        ],
    ),
    "mhsa_one_kv_head_rope": (
        [5, 6],
        [
            {
                "type": "MultiHeadSelfAttention",
                "num_heads": 3,
                "num_kv_heads": 1,
                "head_dim": 2,
                "rope_theta": 100.0,
            }
        ],
    ),
}


def random_state(spec: ct.Spec, seed: int = 1) -> ct.CanonicalState:
    """Seeded parameters for the spec's model (moving variances kept positive)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, p in param_specs(spec.model).items():
        value = rng.normal(0.0, 0.5, p.shape)
        params[name] = (np.abs(value) + 0.5 if name.endswith("moving_variance") else value).astype(
            np.float32
        )
    return ct.CanonicalState(params)


def random_inputs(spec: ct.Spec, seed: int = 2, batch: int = 4) -> np.ndarray:
    """A seeded batch for the spec's model: token ids for an Embedding model, else floats."""
    rng = np.random.default_rng(seed)
    shape = (batch, *spec.model.input_shape)
    if spec.model.resolved_input_dtype == "int64":
        return rng.integers(0, spec.model.layers[0].vocab_size, shape)
    return rng.normal(size=shape).astype(np.float32)
