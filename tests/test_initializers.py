"""Initialisers by Keras's names, drawn by core with numpy: statistics, the spec form and its
errors, and every backend starting from the same values."""

from __future__ import annotations

import math

import crosstrain as ct
import numpy as np
import pytest
from crosstrain.errors import SpecError
from crosstrain.nn.initializers import Initializer, draw
from crosstrain.nn.model import core_drawn, init_params, param_specs


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize(
    ("name", "options", "shape", "fans", "std"),
    [
        ("random_normal", {"stddev": 0.02}, (400, 300), None, 0.02),
        ("normal", {"mean": 1.0, "stddev": 0.1}, (200, 100), None, 0.1),
        ("truncated_normal", {"stddev": 0.02}, (400, 300), None, 0.02 * 0.8796),
        ("he_normal", {}, (256, 300), None, math.sqrt(2 / 256)),
        ("he_uniform", {}, (256, 300), None, math.sqrt(2 / 256)),
        ("lecun_normal", {}, (256, 300), None, math.sqrt(1 / 256)),
        ("glorot_normal", {}, (3, 3, 16, 32), None, math.sqrt(2 / (144 + 288))),
        ("glorot_uniform", {}, (200, 300), None, math.sqrt(2 / 500)),
        ("uniform", {}, (300, 300), None, 0.1 / math.sqrt(12)),
        ("he_normal", {}, (50, 60), (128, 60), math.sqrt(2 / 128)),  # the layer's fans win
    ],
)
def test_statistics_follow_keras(name, options, shape, fans, std) -> None:
    value = draw(Initializer(name=name, options=options), shape, _rng(), fans)
    assert value.dtype == np.float32 and value.shape == shape
    assert abs(float(value.std()) - std) < 0.03 * std
    mean = options.get("mean", 0.0)
    assert abs(float(value.mean()) - mean) < 0.05 * std + 1e-3
    if name == "truncated_normal":
        assert np.abs(value).max() <= 2 * 0.02 + 1e-7


def test_orthogonal_constant_zeros_ones() -> None:
    q = draw(Initializer(name="orthogonal", options={"gain": 2.0}), (6, 4), _rng())
    np.testing.assert_allclose(q.T @ q, 4.0 * np.eye(4), atol=1e-5)
    wide = draw("orthogonal", (3, 8), _rng())
    np.testing.assert_allclose(wide @ wide.T, np.eye(3), atol=1e-5)
    conv = draw("orthogonal", (3, 3, 4, 8), _rng()).reshape(36, 8)
    np.testing.assert_allclose(conv.T @ conv, np.eye(8), atol=1e-5)
    assert (draw(Initializer(name="constant", options={"value": 0.5}), (3,), _rng()) == 0.5).all()
    assert (draw("zeros", (2, 2), _rng()) == 0).all() and (draw("ones", (2,), _rng()) == 1).all()


def scaled_ones(shape, rng, scale=1.0):
    """A `module:function` initialiser for the test below."""
    return np.full(shape, scale)


def _spec(layers, input_shape=(4,)):
    return ct.load_spec({"model": {"input_shape": list(input_shape), "layers": layers}})


def test_layers_take_keras_options_and_references() -> None:
    spec = _spec(
        [
            {
                "type": "Dense",
                "units": 8,
                "kernel_initializer": {"name": "normal", "options": {"stddev": 0.02}},
                "bias_initializer": {"name": "constant", "options": {"value": 0.1}},
            },
            {
                "type": "Dense",
                "units": 3,
                "kernel_initializer": {
                    "name": "test_initializers:scaled_ones",
                    "options": {"scale": 3},
                },
            },
        ]
    )
    values = init_params(spec.model, 0)
    np.testing.assert_allclose(values["dense_0/bias"], 0.1)
    assert values["dense_0/kernel"].std() < 0.05
    np.testing.assert_array_equal(values["dense_1/kernel"], 3.0)
    # the default draws are the ones every spec had before the options existed
    plain = _spec([{"type": "Dense", "units": 8}, {"type": "Dense", "units": 3}])
    limit = math.sqrt(6 / 12)
    rng = np.random.default_rng([0, __import__("zlib").crc32(b"dense_0/kernel")])
    expected = rng.uniform(-limit, limit, (4, 8)).astype(np.float32)
    np.testing.assert_array_equal(init_params(plain.model, 0)["dense_0/kernel"], expected)
    embed = _spec(
        [{"type": "Embedding", "vocab_size": 50, "dim": 8, "embeddings_initializer": "zeros"}],
        input_shape=(3,),
    )
    assert not init_params(embed.model, 0)["embedding_0/embeddings"].any()
    assert param_specs(embed.model)["embedding_0/embeddings"].init.name == "zeros"


def test_a_bad_initializer_is_one_clear_error_naming_the_field() -> None:
    with pytest.raises(SpecError) as info:
        _spec(
            [{"type": "Conv2D", "filters": 2, "kernel_size": 3, "kernel_initializer": "he_nromal"}],
            input_shape=(5, 5, 1),
        )
    assert len(info.value.issues) == 1
    text = str(info.value)
    assert (
        "model.layers[0].kernel_initializer" in text and "unknown initializer 'he_nromal'" in text
    )
    with pytest.raises(
        SpecError,
        match=r"layers\[0\]\.bias_initializer: initializer 'constant' "
        r"takes value; not stddev",
    ):
        _spec(
            [
                {
                    "type": "Dense",
                    "units": 2,
                    "bias_initializer": {"name": "constant", "options": {"stddev": 1}},
                }
            ]
        )


BACKENDS = ["torch", "jax", "keras"]


@pytest.mark.parametrize("init", ["seed", "native"])
def test_every_backend_starts_from_the_same_weights(init: str) -> None:
    spec = ct.load_spec(
        {
            "model": {
                "input_shape": [6, 6, 2],
                "init": init,
                "layers": [
                    {
                        "type": "Conv2D",
                        "filters": 3,
                        "kernel_size": 3,
                        "kernel_initializer": "he_normal",
                        "bias_initializer": {"name": "random_uniform"},
                    },
                    {"type": "Flatten"},
                    {
                        "type": "Dense",
                        "units": 4,
                        "kernel_initializer": {"name": "orthogonal", "options": {"gain": 1.5}},
                    },
                    {
                        "type": "LayerNorm",
                        "gamma_initializer": {"name": "constant", "options": {"value": 2.0}},
                    },
                ],
            },
            "trainer": {"progress": False},
        }
    )
    expected = init_params(spec.model, spec.seed)
    if init == "native":  # the backend draws the four plain initialisers itself, core the rest
        drawn = core_drawn(spec.model)
        assert set(drawn) == {"conv2d_0/kernel", "dense_2/kernel", "layernorm_3/gamma"}
        expected = {name: value for name, value in expected.items() if name in drawn}
    for backend in BACKENDS:
        params = ct.build(spec, backend=backend).get_state().params
        assert params.keys() >= expected.keys(), backend
        for name, value in expected.items():
            np.testing.assert_array_equal(params[name], value, err_msg=f"{backend} {name}")
