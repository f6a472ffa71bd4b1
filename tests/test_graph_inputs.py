"""A graph with several named inputs (`model.inputs`) fed from a dict of arrays by input name or
a tuple in input order: the same losses on torch and jax (keras:jax: tests/test_graph.py), and
data errors that name the input."""

from __future__ import annotations

import crosstrain as ct
import numpy as np
import pytest
from crosstrain.errors import DataError


def tabular_spec(max_epochs: int = 3) -> dict:
    return {
        "seed": 0,
        "data": {"batch_size": 16, "validation_split": 0.25},
        "model": {
            "inputs": {"features": {"shape": [5]}, "category": {"shape": [], "dtype": "int64"}},
            "nodes": [
                {
                    "name": "emb",
                    "type": "Embedding",
                    "vocab_size": 4,
                    "dim": 3,
                    "inputs": "category",
                },
                {"name": "cat", "type": "Concatenate", "inputs": ["features", "emb"]},
                {"name": "hidden", "type": "Dense", "units": 16, "activation": "relu"},
                {"name": "head", "type": "Dense", "units": 2},
            ],
        },
        "loss": "cross_entropy",
        "metrics": ["accuracy"],
        "optimizer": {"name": "adam", "lr": 0.05},
        "trainer": {"max_epochs": max_epochs, "progress": False, "loggers": [], "checkpoint": None},
    }


def tabular_data(n: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two inputs that both matter: the label is the sign of a feature XOR the id's parity."""
    rng = np.random.default_rng(0)
    features = rng.standard_normal((n, 5)).astype(np.float32)
    category = rng.integers(0, 4, n)
    return features, category, ((features[:, 0] > 0) ^ (category % 2 == 1)).astype(np.int64)


def tabular_losses(backend: str, form: str = "dict") -> list[float]:
    features, category, y = tabular_data()
    x = {"features": features, "category": category} if form == "dict" else (features, category)
    result = ct.fit(tabular_spec(), backend=backend, data=(x, y), run_dir=False)
    return [float(h["train_loss"]) for h in result.history]


def test_dict_and_tuple_inputs_train_alike_on_torch_and_jax() -> None:
    pytest.importorskip("jax")
    by_dict = tabular_losses("torch")
    assert tabular_losses("torch", "tuple") == by_dict
    np.testing.assert_allclose(tabular_losses("jax"), by_dict, rtol=1e-5)
    assert by_dict[-1] < by_dict[0]


def test_predict_takes_a_dict_of_inputs() -> None:
    features, category, _ = tabular_data(5)
    out = ct.predict(tabular_spec(), None, {"features": features, "category": category}, "torch")
    assert out.shape == (5, 2)


def test_input_errors_name_the_input() -> None:
    features, category, y = tabular_data(8)
    spec = tabular_spec(1)
    with pytest.raises(DataError, match=r"missing \['category'\]"):
        ct.fit(spec, backend="torch", data=({"features": features}, y), run_dir=False)
    with pytest.raises(DataError, match="input 'features'.*model.inputs.features.shape"):
        bad = {"features": features[:, :3], "category": category}
        ct.fit(spec, backend="torch", data=(bad, y), run_dir=False)
    with pytest.raises(DataError, match="input 'category'.*vocabulary of model.nodes"):
        bad = {"features": features, "category": category + 4}
        ct.fit(spec, backend="torch", data=(bad, y), run_dir=False)


def test_exports_refuse_several_inputs_in_one_line(tmp_path) -> None:
    program = ct.build(tabular_spec(), backend="torch")
    with pytest.raises(ct.UnsupportedFeature, match="graph with several inputs"):
        program.export(tmp_path / "model.pt2", "torch-program")


class Tabular(ct.Module):
    """The graph of `tabular_spec`, written as a Python `forward` (Keras functional style)."""

    inputs = {"features": ct.Input((5,)), "category": ct.Input((), "int64")}

    def forward(self, features, category):
        layers = ct.layers
        emb = layers.Embedding(4, 3, name="emb")(category)
        x = layers.Concatenate(name="cat")([features, emb])
        x = layers.Dense(16, activation="relu", name="hidden")(x)
        return layers.Dense(2, name="head")(x)


class Tied(ct.Module):
    input_shape = (6,)

    def forward(self, x):
        tok, block = ct.layers.Embedding(11, 4), ct.layers.Dense(4, activation="tanh")
        h = block(block(tok(x)))  # one layer called twice: the second node shares it
        return ct.layers.Dense(11, use_bias=False)(ct.layers.LayerNorm()(h), tie=tok)


def test_module_forward_builds_the_same_graph() -> None:
    from crosstrain.nn.model import plan

    def placed(model):
        return [(n.name, n.inputs, n.layer, n.output_shape) for n in plan(model)]

    assert placed(Tabular().to_spec().model) == placed(ct.load_spec(tabular_spec()).model)
    nodes = Tied().to_spec().model.nodes
    assert [(n.name, n.shares, n.tie) for n in nodes] == [
        ("embedding_0", None, None),
        ("dense_1", None, None),
        ("dense_2", "dense_1", None),
        ("layernorm_3", None, None),
        ("dense_4", None, "embedding_0"),
    ]
    features, category, y = tabular_data(32)
    result = ct.fit(Tabular(), backend="torch", data=((features, category), y), run_dir=False)
    assert np.isfinite(result.metrics["train_loss"])
    with pytest.raises(TypeError, match="inside Module.forward"):
        ct.layers.Dense(2)(features)
