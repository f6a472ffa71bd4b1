"""Models as graphs (`model.nodes`): merge layers, planning errors, canonical names, and the
same seeded losses on torch, jax and keras:jax (keras in a fresh interpreter per engine)."""

from __future__ import annotations

import crosstrain as ct
import numpy as np
import pytest
from conftest import call_in_fresh_python
from crosstrain.nn.model import forward, init_params, param_specs
from crosstrain.spec.summary import summary

NODES = [
    {"name": "a", "type": "Dense", "units": 8, "activation": "relu"},
    {"name": "b", "type": "Dense", "units": 8, "inputs": "input"},
    {"name": "s", "type": "Add", "inputs": ["a", "b"]},
    {"name": "m", "type": "Multiply", "inputs": ["a", "s"]},
    {"name": "c", "type": "Concatenate", "inputs": ["s", "m", "input"]},
    {
        "name": "res",
        "type": "Residual",
        "layers": [{"type": "Dense", "units": 22}, {"type": "Tanh"}],
    },
    {"name": "seq", "type": "Sequential", "layers": [{"type": "Dense", "units": 8}]},
    {"name": "head", "type": "Dense", "units": 3},
]


def graph_spec(nodes: list[dict] | None = None, **model: object) -> dict:
    return {
        "seed": 0,
        "data": {"batch_size": 16, "shuffle": True},
        "model": {"input_shape": [6], "nodes": nodes or NODES, **model},
        "loss": "cross_entropy",
        "metrics": ["accuracy"],
        "optimizer": {"name": "adam", "lr": 0.01},
        "trainer": {"max_epochs": 2, "progress": False, "loggers": [], "checkpoint": None},
    }


def graph_data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n)


def graph_losses(backend: str) -> list[float]:
    """Per-epoch training losses of the graph of NODES (what every backend must agree on)."""
    result = ct.fit(graph_spec(), backend=backend, data=graph_data(), run_dir=False)
    return [float(h["train_loss"]) for h in result.history]


def _error(nodes: list[dict], **model: object) -> str:
    with pytest.raises(ct.SpecError) as err:
        ct.load_spec(graph_spec(nodes, **model))
    return str(err.value)


def test_merge_layers_reference() -> None:
    x1, x2 = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    np.testing.assert_array_equal(ct.layers.Add().forward(np, {}, [x1, x2]), x1 + 1)
    np.testing.assert_array_equal(ct.layers.Multiply().forward(np, {}, [x1, x2 * 2]), x1 * 2)
    cat = ct.layers.Concatenate(axis=1)
    assert cat.output_shape(((3, 4), (2, 4))) == (5, 4)
    assert cat.forward(np, {}, [np.zeros((2, 3, 4)), np.ones((2, 2, 4))]).shape == (2, 5, 4)
    assert ct.layers.Concatenate().output_shape(((3,), (4,))) == (7,)
    with pytest.raises(ValueError, match="one shape"):
        ct.layers.Add().output_shape(((3,), (4,)))
    with pytest.raises(ValueError, match="batch axis"):
        ct.layers.Concatenate(axis=0).output_shape(((3,), (4,)))


def test_canonical_names_and_reference_forward() -> None:
    spec = ct.load_spec(graph_spec())
    names = list(param_specs(spec.model))
    assert names[:4] == ["a/kernel", "a/bias", "b/kernel", "b/bias"]
    assert "res/dense_0/kernel" in names and "seq/dense_0/bias" in names
    params = init_params(spec.model, 0)
    x = graph_data(4)[0]
    a = np.maximum(x @ params["a/kernel"], 0)
    b = x @ params["b/kernel"]
    c = np.concatenate([a + b, a * (a + b), x], axis=-1)
    h = c + np.tanh(c @ params["res/dense_0/kernel"])
    h = h @ params["seq/dense_0/kernel"]
    np.testing.assert_allclose(forward(spec.model, params, x), h @ params["head/kernel"], rtol=1e-5)
    again = ct.load_spec(spec.to_dict())  # round trip: nodes are written with their options inline
    assert spec.to_dict()["model"]["nodes"][0] == {
        "name": "a",
        "type": "Dense",
        "units": 8,
        "activation": "relu",
        "use_bias": True,
    }
    assert again.model == spec.model


def test_graph_errors_name_the_node_and_field() -> None:
    dense = {"type": "Dense", "units": 3}
    message = _error([{"name": "a", **dense, "inputs": "nope"}])
    assert "model.nodes[0].inputs: node 'a': unknown input 'nope'" in message
    message = _error([{"name": "a", **dense, "inputs": "b"}, {"name": "b", **dense}])
    assert "model.nodes[0].inputs: node 'a': reads 'b' before it is defined" in message
    assert "cycle" in _error([{"name": "a", **dense, "inputs": "a"}])
    message = _error([{"name": "a", **dense}, {"name": "a", "type": "ReLU"}])
    assert "model.nodes[1].name: node 'a': the name is already used" in message
    assert "model.nodes[0].inputs" in _error([{"name": "a", "type": "Add"}])
    assert "takes one input" in _error([{"name": "a", **dense, "inputs": ["input", "input"]}])
    assert "model.outputs" in _error([{"name": "a", **dense}], outputs="zz")
    chain = {"model": {"input_shape": [3], "layers": [{"type": "Add"}]}, "loss": "mse"}
    with pytest.raises(ct.SpecError, match="use it in `model.nodes`"):
        ct.load_spec(chain)


def test_summary_shows_nodes_and_inputs() -> None:
    text = str(summary(graph_spec()))
    assert "Node" in text and "Inputs" in text
    line = next(row for row in text.splitlines() if row.startswith("c "))
    assert "s, m, input" in line and "(None, 22)" in line


def test_graph_trains_the_same_on_torch_and_jax() -> None:
    pytest.importorskip("jax")
    torch_losses = graph_losses("torch")
    np.testing.assert_allclose(graph_losses("jax"), torch_losses, rtol=1e-5)
    assert torch_losses[-1] < torch_losses[0]


TIED = [
    {"name": "tok", "type": "Embedding", "vocab_size": 11, "dim": 4},
    {"name": "block", "type": "Dense", "units": 4, "activation": "tanh"},
    {"name": "again", "shares": "block"},
    {"name": "norm", "type": "LayerNorm"},
    {"name": "head", "type": "Dense", "units": 11, "tie": "tok", "use_bias": False},
]


def tied_fit(backend: str, run_dir: str | bool = False) -> tuple[list[float], list[str]]:
    """Losses and canonical parameter names of a tied-embedding model with a shared block."""
    spec = graph_spec(TIED, input_shape=[6])
    spec["data"]["batch_size"] = 8
    if run_dir:
        del spec["trainer"]["checkpoint"]  # the default policy: a checkpoint at the end
    rng = np.random.default_rng(0)
    x = rng.integers(0, 11, (32, 6))
    result = ct.fit(spec, backend=backend, data=(x, (x + 1) % 11), run_dir=run_dir)
    return [float(h["train_loss"]) for h in result.history], sorted(result.state.params)


def test_shared_and_tied_nodes_own_one_copy(tmp_path) -> None:
    pytest.importorskip("jax")
    spec = ct.load_spec(graph_spec(TIED, input_shape=[6]))
    assert list(param_specs(spec.model)) == [
        "tok/embeddings",
        "block/kernel",
        "block/bias",
        "norm/gamma",
        "norm/beta",
    ]
    params = init_params(spec.model, 0)
    x = np.arange(12).reshape(2, 6) % 11
    h = np.tanh(
        np.tanh(params["tok/embeddings"][x] @ params["block/kernel"]) @ params["block/kernel"]
    )
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(
        forward(spec.model, params, x), h @ params["tok/embeddings"].T, rtol=1e-4, atol=1e-6
    )
    torch_losses, names = tied_fit("torch", str(tmp_path))
    assert names == ["block/bias", "block/kernel", "norm/beta", "norm/gamma", "tok/embeddings"]
    jax_losses, _ = tied_fit("jax")
    np.testing.assert_allclose(jax_losses, torch_losses, rtol=1e-5)
    assert torch_losses[-1] < torch_losses[0]
    from crosstrain.checkpoint.format import latest_checkpoint, read_checkpoint

    found = [latest_checkpoint(p) for p in tmp_path.rglob("checkpoints")]
    state, _ = read_checkpoint(next(p for p in found if p is not None))
    assert sorted(state.params) == names  # the embedding table is stored once


def keras_results(backend: str) -> dict:
    """Every graph of these tests trained on one Keras engine (one interpreter per engine)."""
    from test_graph_inputs import tabular_losses

    return {
        "graph": graph_losses(backend),
        "tabular": tabular_losses(backend),
        "tied": tied_fit(backend),
    }


def test_graphs_train_the_same_on_keras_jax() -> None:
    """The chain-like graph, the two-input model and the tied model give torch's losses."""
    pytest.importorskip("keras")
    from test_graph_inputs import tabular_losses

    found = call_in_fresh_python("test_graph", "keras_results", "keras:jax")
    np.testing.assert_allclose(found["graph"], graph_losses("torch"), rtol=1e-5)
    np.testing.assert_allclose(found["tabular"], tabular_losses("torch"), rtol=1e-5)
    losses, names = tied_fit("torch")
    assert found["tied"][1] == names
    np.testing.assert_allclose(found["tied"][0], losses, rtol=1e-5)


def test_shares_and_tie_errors() -> None:
    dense = {"type": "Dense", "units": 3}
    assert "model.nodes[1].shares" in _error([{"name": "a", **dense}, {"name": "b", "shares": "z"}])
    message = _error([{"name": "a", **dense}, {"name": "b", **dense, "tie": "a"}])
    assert "model.nodes[1].tie: node 'b': 'a' is not an earlier Embedding node" in message
    emb = {"name": "e", "type": "Embedding", "vocab_size": 5, "dim": 3}
    message = _error([emb, {"name": "h", "type": "Dense", "units": 4, "tie": "e"}], input_shape=[2])
    assert "vocab_size 5" in message


def test_torch_program_export_of_a_graph(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    program = ct.build(graph_spec(), backend="torch")
    path = program.export(tmp_path / "graph.pt2", "torch-program")
    x = graph_data(3)[0]
    out = torch.export.load(str(path)).module()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, program.predict_step((x, None)), rtol=1e-5)
