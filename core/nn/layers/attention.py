"""Self-attention: multi-head, grouped-query (`num_kv_heads`), causal, rotary positions.

Rotary embeddings follow Llama's "rotate half" convention as Hugging Face transformers writes
it (`LlamaRotaryEmbedding`, `apply_rotary_pos_emb`): for position `p` and pair index
`i < head_dim/2`, the angle is `p * rope_theta ** (-2i / head_dim)`, both halves of a head share
the angles (`cos`/`sin` of shape `(sequence, head_dim)` are the angles repeated twice), and
`q' = q * cos + rotate_half(q) * sin` with `rotate_half(x) = concat(-x[d/2:], x[:d/2])`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from crosstrain.nn.initializers import InitializerOption
from crosstrain.nn.layers._base import Layer, ParamSpec, Shape, activate
from pydantic import Field, PositiveFloat, PositiveInt, model_validator


def rope_tables(sequence: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """`(cos, sin)`, each `(sequence, head_dim)` float32: the rotary tables every backend uses.

    Computed once in float64 with numpy (so every backend rotates by the same numbers) and
    rounded to float32.
    """
    inverse = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(sequence, dtype=np.float64)[:, None] * inverse[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(xp: Any, x: Any, cos: Any, sin: Any) -> Any:
    """Rotates `x` `(batch, sequence, heads, head_dim)` by tables `(sequence, head_dim)`."""
    half = x.shape[-1] // 2
    rotated = xp.concat([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


class MultiHeadSelfAttention(Layer):
    """Self-attention on `(sequence, features)`, projected back to `features`.

    Parameters: `query/kernel (features, heads*head_dim)`, `{key,value}/kernel (features,
    kv_heads*head_dim)`, `output/kernel (heads*head_dim, features)` and, with `use_bias`, a
    `/bias` for each. Scores are scaled by `1/sqrt(head_dim)`; `causal` masks future positions;
    `num_kv_heads` (default `num_heads`) < `num_heads` is grouped-query attention (query head
    `h` reads key/value head `h // (num_heads / num_kv_heads)`, as Llama's `repeat_kv`);
    `rope_theta` applies rotary position embeddings to queries and keys (None: none);
    `dropout` drops attention weights in training.
    """

    positional: ClassVar = ("num_heads", "head_dim")
    type: Literal["MultiHeadSelfAttention"] = "MultiHeadSelfAttention"
    conformance_cases: ClassVar[list[dict[str, Any]]] = [
        {
            "id": "MultiHeadSelfAttention",
            "layer": {"type": "MultiHeadSelfAttention", "num_heads": 2, "head_dim": 3},
            "input_shape": [4, 6],
            "extended": True,
        },
        {
            "id": "MultiHeadSelfAttention-causal",
            "layer": {
                "type": "MultiHeadSelfAttention",
                "num_heads": 2,
                "head_dim": 3,
                "causal": True,
            },
            "input_shape": [4, 6],
        },
        {
            "id": "MultiHeadSelfAttention-gqa-rope",
            "layer": {
                "type": "MultiHeadSelfAttention",
                "num_heads": 4,
                "num_kv_heads": 2,
                "head_dim": 4,
                "causal": True,
                "use_bias": False,
                "rope_theta": 10000.0,
            },
            "input_shape": [5, 6],
        },
    ]
    array_api: ClassVar[bool] = False  # numpy reference; backends use their own
    num_heads: PositiveInt
    head_dim: PositiveInt
    num_kv_heads: PositiveInt | None = None
    causal: bool = False
    use_bias: bool = True
    kernel_initializer: InitializerOption = None
    bias_initializer: InitializerOption = None
    rope_theta: PositiveFloat | None = None
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_heads(self) -> MultiHeadSelfAttention:
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.kv_heads})"
            )
        if self.rope_theta is not None and self.head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {self.head_dim}")
        return self

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads (`num_kv_heads`, else `num_heads`)."""
        return self.num_kv_heads or self.num_heads

    @property
    def fused_plain(self) -> bool:
        """Whether this is classic multi-head attention (no grouped heads, rotary or dropout)."""
        return self.kv_heads == self.num_heads and self.rope_theta is None and not self.dropout

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2:
            raise ValueError(
                f"MultiHeadSelfAttention expects (sequence, features), got {input_shape}"
            )
        return tuple(input_shape)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        features = input_shape[-1]
        inner, kv_inner = self.num_heads * self.head_dim, self.kv_heads * self.head_dim
        specs: dict[str, ParamSpec] = {}
        kernel = self.initializer("kernel_initializer", "glorot_uniform")
        bias = self.initializer("bias_initializer", "zeros")
        for proj, width in (("query", inner), ("key", kv_inner), ("value", kv_inner)):
            specs[f"{proj}/kernel"] = ParamSpec((features, width), kernel, (features, width))
            if self.use_bias:
                specs[f"{proj}/bias"] = ParamSpec((width,), bias)
        specs["output/kernel"] = ParamSpec((inner, features), kernel, (inner, features))
        if self.use_bias:
            specs["output/bias"] = ParamSpec((features,), bias)
        return specs

    def forward_flops(self, input_shape: Shape) -> int:
        """The four projections, the scores `q·k` and the weighted sum of the values."""
        seq, features = input_shape
        inner, kv_inner = self.num_heads * self.head_dim, self.kv_heads * self.head_dim
        projections = 2 * seq * features * (2 * inner + 2 * kv_inner)
        return projections + 2 * seq * seq * inner * 2

    def forward(self, xp, params, x, training=False, rng=None):
        batch, seq, _ = x.shape

        def project(name: str, heads: int) -> np.ndarray:
            y = x @ params[f"{name}/kernel"]
            if self.use_bias:
                y = y + params[f"{name}/bias"]
            return y.reshape(batch, seq, heads, self.head_dim)

        q = project("query", self.num_heads)
        k, v = project("key", self.kv_heads), project("value", self.kv_heads)
        if self.rope_theta is not None:
            cos, sin = rope_tables(seq, self.head_dim, self.rope_theta)
            q, k = apply_rope(np, q, cos, sin), apply_rope(np, k, cos, sin)
        repeat = self.num_heads // self.kv_heads
        k, v = np.repeat(k, repeat, axis=2), np.repeat(v, repeat, axis=2)
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
        if self.causal:
            scores = np.where(np.tril(np.ones((seq, seq), dtype=bool)), scores, -np.inf)
        weights = activate(scores, "softmax")
        if training and self.dropout and rng is not None:
            keep = rng.random(weights.shape) >= self.dropout
            weights = np.where(keep, weights / (1.0 - self.dropout), 0.0)
        mixed = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, seq, -1)
        y = mixed @ params["output/kernel"]
        if self.use_bias:
            y = y + params["output/bias"]
        return y.astype(x.dtype)
