"""The sequence layers (attention with grouped heads and rotary positions, PositionEmbedding,
RMSNorm, GatedMLP, GELU's tanh form, SiLU): numpy reference math checked by hand and against
Hugging Face's Llama, and the torch modules against the reference (jax and the Keras engines
run the same cases from tests/backends/layer_cases.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import crosstrain as ct
import numpy as np
import pytest
from crosstrain.nn.layers import apply_rope, rope_tables
from crosstrain.nn.model import forward

sys.path.insert(0, str(Path(__file__).parent / "backends"))
from layer_cases import LAYER_CASES, random_inputs, random_state  # noqa: E402


def _spec(layers: list[dict], shape: list[int]) -> ct.Spec:
    return ct.load_spec(
        {
            "model": {"input_shape": shape, "layers": layers},
            "loss": "mse",
            "optimizer": {"name": "sgd", "lr": 0.1},
            "trainer": {"progress": False},
        }
    )


def test_rope_matches_hugging_face_llama() -> None:
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    config = LlamaConfig(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=500.0
    )
    q, k = torch.randn(2, 4, 7, 8), torch.randn(2, 2, 7, 8)
    cos, sin = llama.LlamaRotaryEmbedding(config)(q, torch.arange(7)[None])
    q_hf, k_hf = llama.apply_rotary_pos_emb(q, k, cos, sin)
    ours_cos, ours_sin = rope_tables(7, 8, 500.0)
    for mine, theirs in ((q, q_hf), (k, k_hf)):
        rotated = apply_rope(np, mine.transpose(1, 2).numpy(), ours_cos, ours_sin)
        np.testing.assert_allclose(rotated, theirs.transpose(1, 2).numpy(), atol=2e-6)


def test_reference_math_by_hand() -> None:
    x = np.array([[[3.0, 4.0]]], np.float32)
    rms = ct.layers.RMSNorm(epsilon=1e-12).forward(np, {"scale": np.array([1.0, 2.0])}, x)
    np.testing.assert_allclose(rms, [[[3 / math.sqrt(12.5), 8 / math.sqrt(12.5)]]], rtol=1e-6)
    gelu = ct.layers.GELU(approximate=True).forward(np, {}, np.array([1.0], np.float32))
    np.testing.assert_allclose(gelu, [0.8411920], rtol=1e-6)  # torch gelu(1, approximate="tanh")
    silu = ct.layers.SiLU().forward(np, {}, np.array([1.0], np.float32))
    np.testing.assert_allclose(silu, [1 / (1 + math.exp(-1))], rtol=1e-6)
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    pos = ct.layers.PositionEmbedding(4).forward(np, {"embeddings": table}, np.zeros((2, 3, 3)))
    np.testing.assert_array_equal(pos, np.broadcast_to(table[:3], (2, 3, 3)))


def test_grouped_heads_equal_repeated_full_heads() -> None:
    """GQA with kv heads repeated is multi-head attention with the copies as its own heads."""
    layer = ct.layers.MultiHeadSelfAttention(4, 2, num_kv_heads=2, causal=True, use_bias=False)
    full = ct.layers.MultiHeadSelfAttention(4, 2, causal=True, use_bias=False)
    rng = np.random.default_rng(0)
    params = {n: rng.normal(size=p.shape) for n, p in layer.params((5, 6)).items()}
    widened = dict(params)
    for name in ("key/kernel", "value/kernel"):  # kv head j serves query heads 2j and 2j+1
        heads = params[name].reshape(6, 2, 1, 2)
        widened[name] = np.concatenate([heads, heads], axis=2).reshape(6, 8)
    x = rng.normal(size=(3, 5, 6))
    np.testing.assert_allclose(layer.forward(np, params, x), full.forward(np, widened, x))


def test_bad_options_are_spec_errors() -> None:
    with pytest.raises(ct.SpecError, match="multiple of num_kv_heads"):
        _spec(
            [{"type": "MultiHeadSelfAttention", "num_heads": 3, "num_kv_heads": 2, "head_dim": 2}],
            [4, 6],
        )
    with pytest.raises(ct.SpecError, match="even head_dim"):
        _spec(
            [{"type": "MultiHeadSelfAttention", "num_heads": 2, "head_dim": 3, "rope_theta": 1e4}],
            [4, 6],
        )
    with pytest.raises(ct.SpecError, match="longer than sequence_length"):
        _spec([{"type": "PositionEmbedding", "sequence_length": 3}], [4, 6])


@pytest.mark.parametrize("case", ["llama_block", "gpt2_bits"])
def test_torch_matches_the_reference(case: str) -> None:
    pytest.importorskip("torch")
    shape, layers = LAYER_CASES[case]
    spec = _spec(layers, shape)
    state, x = random_state(spec), random_inputs(spec)
    program = ct.build(spec, backend="torch")
    program.set_state(state)
    expected = forward(spec.model, state.params, x)
    np.testing.assert_allclose(program.predict_step((x, None)), expected, rtol=1e-5, atol=1e-6)


def test_attention_dropout_drops_in_training_only() -> None:
    pytest.importorskip("torch")
    layers = [{"type": "MultiHeadSelfAttention", "num_heads": 2, "head_dim": 4, "dropout": 0.5}]
    spec = _spec(layers, [6, 8])
    state, x = random_state(spec), random_inputs(spec)
    program = ct.build(spec, backend="torch")
    program.set_state(state)
    np.testing.assert_allclose(
        program.predict_step((x, None)), forward(spec.model, state.params, x), rtol=1e-5, atol=1e-6
    )
    module = program.native_model
    module.train(True)
    import torch

    with torch.no_grad():
        a, b = (module(torch.from_numpy(x)).numpy() for _ in range(2))
    assert not np.allclose(a, b)
