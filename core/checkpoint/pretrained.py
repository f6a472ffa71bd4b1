"""Hugging Face checkpoints as crosstrain specs: a transformers GPT-2 or Llama directory
(`config.json` + `model.safetensors`, or a sharded `model.safetensors.index.json`) becomes a
chain of crosstrain's own layers plus one safetensors file in crosstrain's canonical names,
which `model.weights` points at. No framework is imported: the config is read with json, the
tensors with crosstrain's safetensors reader (BF16 and F16 come back as float32) and the
converted file written with `safetensors.numpy`.

The layers, with the semantics of transformers' modules:

- GPT-2: `Embedding` (wte); `Residual(PositionEmbedding)` (wpe, learned positions added);
  per block `Residual(LayerNorm, MultiHeadSelfAttention causal, use_bias)` and
  `Residual(LayerNorm, Dense, GELU, Dense)` (`gelu_new` is GELU approximate, tanh);
  `LayerNorm` (ln_f); `Dense` head without bias. Every LayerNorm takes `layer_norm_epsilon`.
  Conv1D weights are `(in, out)` already; the fused `c_attn` is split into query/key/value.
  Dropouts (`embd_pdrop`, `attn_pdrop`, `resid_pdrop`) become Dropout layers / the attention's
  `dropout` where they are not zero.
- Llama: `Embedding` (embed_tokens); per block `Residual(RMSNorm, MultiHeadSelfAttention causal,
  num_kv_heads, rope_theta, use_bias=attention_bias)` and `Residual(RMSNorm, GatedMLP)`;
  `RMSNorm` (norm); `Dense` head without bias. nn.Linear weights `(out, in)` are transposed.

The head: a tied model (GPT-2 by default, a Llama with `tie_word_embeddings`) becomes a graph
(`model.nodes`, the chain's layers as nodes of the same names, so the same canonical names)
whose `lm_head` Dense has `tie:` the embedding node and no kernel of its own; an untied one
stays a chain with the head's own kernel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.errors import SpecError, SpecIssue

SUPPORTED = ("gpt2", "llama")
"""The `model_type`s of config.json that convert."""
WEIGHTS_FILE = "crosstrain.safetensors"
"""The converted weights' file name when `from_pretrained` is given no `weights` path."""


def _refuse(directory: Path, message: str) -> SpecError:
    return SpecError(SpecIssue("from_pretrained", f"{directory}: {message}"))


def read_config(directory: str | Path) -> dict[str, Any]:
    """`config.json` of a transformers model directory, refusing any architecture but GPT-2
    and Llama (by its `model_type` and `architectures`)."""
    directory = Path(directory)
    path = directory / "config.json"
    if not path.is_file():
        raise _refuse(directory, "no config.json (not a transformers model directory)")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise _refuse(directory, f"config.json is not readable JSON ({err})") from None
    kind = config.get("model_type")
    if kind not in SUPPORTED:
        architectures = ", ".join(config.get("architectures") or []) or "none given"
        raise _refuse(
            directory,
            f"model_type {kind!r} (architectures: {architectures}) is not supported; "
            f"crosstrain imports {' and '.join(SUPPORTED)} models only",
        )
    return config


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file by crosstrain's own reader (framing checked, BF16 as float32)."""
    from crosstrain.checkpoint.stream import read_tensor_file
    from crosstrain.errors import CheckpointError

    try:
        return read_tensor_file(path, None, bfloat16=True)
    except CheckpointError as err:
        raise _refuse(path.parent, str(err)) from None


def read_tensors(directory: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of `model.safetensors` (or of the shards a `model.safetensors.index.json`
    lists) as float32 numpy arrays, by transformers' names."""
    directory = Path(directory)
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        shards = json.loads(index.read_text()).get("weight_map", {})
        files = [directory / name for name in sorted(set(shards.values()))]
    else:
        pickles = sorted(p.name for p in directory.glob("*.bin"))
        hint = (
            f" ({', '.join(pickles)} is a pickle: save the model again with "
            "save_pretrained(..., safe_serialization=True))"
            if pickles
            else ""
        )
        raise _refuse(directory, f"no model.safetensors{hint}")
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        tensors.update(_load_safetensors(file))
    return {name: np.asarray(value, dtype=np.float32) for name, value in tensors.items()}


def _strip(tensors: dict[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in tensors.items():
        for prefix in prefixes:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        out[name] = value
    return out


def _take(tensors: dict[str, np.ndarray], name: str, directory: Path) -> np.ndarray:
    if name not in tensors:
        raise _refuse(directory, f"model.safetensors has no tensor {name!r}")
    return tensors.pop(name)


def _dropout(rate: float) -> list[dict[str, Any]]:
    return [{"type": "Dropout", "rate": float(rate)}] if rate else []


def _gpt2(config: dict[str, Any], tensors: dict[str, np.ndarray], directory: Path):
    get = config.get
    if get("scale_attn_by_inverse_layer_idx") or get("scale_attn_weights") is False:
        raise _refuse(
            directory,
            "GPT-2 attention scaled other than by 1/sqrt(head_dim) "
            "(scale_attn_by_inverse_layer_idx, scale_attn_weights) is not supported",
        )
    activations = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu": False}
    act = get("activation_function", "gelu_new")
    if act not in activations:
        raise _refuse(directory, f"GPT-2 activation_function {act!r} is not supported")
    width, heads = int(get("n_embd", 768)), int(get("n_head", 12))
    inner, eps = int(get("n_inner") or 4 * width), float(get("layer_norm_epsilon", 1e-5))
    positions, blocks = int(get("n_positions", 1024)), int(get("n_layer", 12))
    resid, attn_drop = float(get("resid_pdrop", 0.1)), float(get("attn_pdrop", 0.1))
    t = _strip(tensors, ("transformer.",))
    wte = _take(t, "wte.weight", directory)
    layers: list[dict[str, Any]] = [
        {"type": "Embedding", "name": "wte", "vocab_size": int(wte.shape[0]), "dim": width},
        {
            "type": "Residual",
            "name": "wpe",
            "layers": [{"type": "PositionEmbedding", "sequence_length": positions}],
        },
        *[dict(d, name="drop") for d in _dropout(float(get("embd_pdrop", 0.1)))],
    ]
    weights = {
        "wte/embeddings": wte,
        "wpe/positionembedding_0/embeddings": _take(t, "wpe.weight", directory),
    }
    norm = {"type": "LayerNorm", "epsilon": eps}
    for i in range(blocks):
        h = f"h.{i}."
        attention = {
            "type": "MultiHeadSelfAttention",
            "num_heads": heads,
            "head_dim": width // heads,
            "causal": True,
            "use_bias": True,
            "dropout": attn_drop,
        }
        layers.append(
            {
                "type": "Residual",
                "name": f"h{i}_attn",
                "layers": [norm, attention, *_dropout(resid)],
            }
        )
        layers.append({
            "type": "Residual",
            "name": f"h{i}_mlp",
            "layers": [norm, {"type": "Dense", "units": inner},
                       {"type": "GELU", "approximate": activations[act]},
                       {"type": "Dense", "units": width}, *_dropout(resid)],
        })  # fmt: skip
        a, m = f"h{i}_attn/", f"h{i}_mlp/"
        weights[a + "layernorm_0/gamma"] = _take(t, h + "ln_1.weight", directory)
        weights[a + "layernorm_0/beta"] = _take(t, h + "ln_1.bias", directory)
        qkv_w = _take(t, h + "attn.c_attn.weight", directory)  # (in, 3 * width): Conv1D
        qkv_b = _take(t, h + "attn.c_attn.bias", directory)
        for part, w, b in zip(
            ("query", "key", "value"), np.split(qkv_w, 3, axis=1), np.split(qkv_b, 3), strict=True
        ):
            weights[f"{a}multiheadselfattention_1/{part}/kernel"] = w
            weights[f"{a}multiheadselfattention_1/{part}/bias"] = b
        weights[a + "multiheadselfattention_1/output/kernel"] = _take(
            t, h + "attn.c_proj.weight", directory
        )
        weights[a + "multiheadselfattention_1/output/bias"] = _take(
            t, h + "attn.c_proj.bias", directory
        )
        weights[m + "layernorm_0/gamma"] = _take(t, h + "ln_2.weight", directory)
        weights[m + "layernorm_0/beta"] = _take(t, h + "ln_2.bias", directory)
        weights[m + "dense_1/kernel"] = _take(t, h + "mlp.c_fc.weight", directory)
        weights[m + "dense_1/bias"] = _take(t, h + "mlp.c_fc.bias", directory)
        weights[m + "dense_3/kernel"] = _take(t, h + "mlp.c_proj.weight", directory)
        weights[m + "dense_3/bias"] = _take(t, h + "mlp.c_proj.bias", directory)
    layers.append(dict(norm, name="ln_f"))
    weights["ln_f/gamma"] = _take(t, "ln_f.weight", directory)
    weights["ln_f/beta"] = _take(t, "ln_f.bias", directory)
    _head(layers, weights, t, "wte", bool(get("tie_word_embeddings", True)), directory)
    return layers, weights, t, positions


def _head(
    layers: list[dict[str, Any]],
    weights: dict[str, np.ndarray],
    tensors: dict[str, np.ndarray],
    embedding: str,
    tied: bool,
    directory: Path,
) -> None:
    """The output projection `lm_head`, a Dense without bias: tied to the `embedding` node's
    table (`tie`, no kernel of its own; a saved `lm_head.weight` is the same matrix) or with
    its own kernel, transformers' `(vocab, features)` transposed."""
    vocab = int(weights[f"{embedding}/embeddings"].shape[0])
    head = {"type": "Dense", "name": "lm_head", "units": vocab, "use_bias": False}
    if tied:
        tensors.pop("lm_head.weight", None)
        layers.append(dict(head, tie=embedding))
        return
    layers.append(head)
    kernel = _take(tensors, "lm_head.weight", directory)
    weights["lm_head/kernel"] = np.ascontiguousarray(kernel.T)


def _rope_theta(config: dict[str, Any], directory: Path) -> float:
    """`rope_theta` from transformers 5's `rope_parameters` (or 4's top-level key), refusing
    scaled rotary embeddings (`rope_type` other than default)."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type")
    if rope_type not in (None, "default"):
        raise _refuse(directory, f"Llama rope_type {rope_type!r} is not supported (only default)")
    return float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)


def _llama(config: dict[str, Any], tensors: dict[str, np.ndarray], directory: Path):
    get = config.get
    act = get("hidden_act", "silu")
    if act not in ("silu", "gelu"):
        raise _refuse(directory, f"Llama hidden_act {act!r} is not supported (silu, gelu)")
    width, heads = int(get("hidden_size", 4096)), int(get("num_attention_heads", 32))
    kv_heads = int(get("num_key_value_heads") or heads)
    head_dim = int(get("head_dim") or width // heads)
    blocks, inner = int(get("num_hidden_layers", 32)), int(get("intermediate_size", 11008))
    eps, bias = float(get("rms_norm_eps", 1e-6)), bool(get("attention_bias", False))
    mlp_bias, theta = bool(get("mlp_bias", False)), _rope_theta(config, directory)
    t = _strip(tensors, ("model.",))
    wte = _take(t, "embed_tokens.weight", directory)
    vocab = int(wte.shape[0])
    layers: list[dict[str, Any]] = [
        {"type": "Embedding", "name": "embed_tokens", "vocab_size": vocab, "dim": width}
    ]
    weights = {"embed_tokens/embeddings": wte}
    norm = {"type": "RMSNorm", "epsilon": eps}
    for i in range(blocks):
        h = f"layers.{i}."
        attention = {
            "type": "MultiHeadSelfAttention",
            "num_heads": heads,
            "num_kv_heads": kv_heads,
            "head_dim": head_dim,
            "causal": True,
            "use_bias": bias,
            "rope_theta": theta,
            "dropout": float(get("attention_dropout", 0.0)),
        }
        mlp = {"type": "GatedMLP", "units": inner, "activation": act, "use_bias": mlp_bias}
        layers.append({"type": "Residual", "name": f"layers{i}_attn", "layers": [norm, attention]})
        layers.append({"type": "Residual", "name": f"layers{i}_mlp", "layers": [norm, mlp]})
        a = f"layers{i}_attn/multiheadselfattention_1/"
        m = f"layers{i}_mlp/gatedmlp_1/"
        weights[f"layers{i}_attn/rmsnorm_0/scale"] = _take(
            t, h + "input_layernorm.weight", directory
        )
        weights[f"layers{i}_mlp/rmsnorm_0/scale"] = _take(
            t, h + "post_attention_layernorm.weight", directory
        )
        for ours, theirs, prefix in (
            *((p, f"self_attn.{p[0]}_proj", a) for p in ("query", "key", "value", "output")),
            *((p, f"mlp.{p}_proj", m) for p in ("gate", "up", "down")),
        ):
            weights[f"{prefix}{ours}/kernel"] = np.ascontiguousarray(
                _take(t, f"{h}{theirs}.weight", directory).T
            )
            if bias if prefix == a else mlp_bias:
                weights[f"{prefix}{ours}/bias"] = _take(t, f"{h}{theirs}.bias", directory)
    layers.append(dict(norm, name="norm"))
    weights["norm/scale"] = _take(t, "norm.weight", directory)
    _head(layers, weights, t, "embed_tokens", bool(get("tie_word_embeddings", False)), directory)
    return layers, weights, t, int(get("max_position_embeddings", 2048))


_IGNORED = re.compile(r"(.*\.)?(attn\.bias|attn\.masked_bias|rotary_emb\.inv_freq)$")
"""Buffers older transformers versions saved with the weights (not parameters)."""


def convert(directory: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`(model section without weights, canonical tensors)` of a GPT-2 or Llama directory."""
    directory = Path(directory)
    config = read_config(directory)
    tensors = read_tensors(directory)
    build = _gpt2 if config["model_type"] == "gpt2" else _llama
    layers, weights, left, positions = build(config, tensors, directory)
    left = sorted(name for name in left if not _IGNORED.fullmatch(name))
    if left:
        raise _refuse(directory, f"tensors the conversion does not use: {', '.join(left[:10])}")
    # a tied head makes the chain a graph of the same names (`<node>/<param>`)
    graph = any("tie" in layer for layer in layers)
    model = {"input_shape": [positions], "input_dtype": "int64"}
    model["nodes" if graph else "layers"] = layers
    return model, weights


def from_pretrained(
    directory: str | Path,
    weights: str | Path | None = None,
    *,
    sequence_length: int | None = None,
    name: str | None = None,
) -> Any:
    """A Spec for a transformers GPT-2 or Llama directory, with `model.weights` pointing at
    its tensors converted to crosstrain's canonical names and layouts.

    Args:
        directory: holds `config.json` and `model.safetensors` (`save_pretrained`'s output).
        weights: where to write the converted safetensors file (default
            `<directory>/crosstrain.safetensors`); the spec names it by its absolute path.
        sequence_length: the model's `input_shape` (default the config's `n_positions` /
            `max_position_embeddings`).
        name: the spec's name (default the directory's name).

    The spec predicts logits `(batch, sequence, vocab)` from int64 token ids and trains with
    `cross_entropy` on next-token labels; the optimizer defaults to AdamW (lr 1e-5).
    Raises SpecError naming the model_type for any architecture but GPT-2 and Llama.
    """
    from crosstrain.spec.schema import load_spec
    from safetensors.numpy import save_file

    directory = Path(directory).expanduser()
    model, tensors = convert(directory)
    if sequence_length is not None:
        model["input_shape"] = [int(sequence_length)]
    target = Path(weights) if weights is not None else directory / WEIGHTS_FILE
    target = target.expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(target)
    )
    model.update(weights=str(target), weights_layout="crosstrain")
    spec_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or directory.resolve().name) or "pretrained"
    return load_spec(
        {
            "name": spec_name,
            "model": model,
            "loss": "cross_entropy",
            "optimizer": {"name": "adamw", "lr": 1e-5},
        }
    )
