"""Text generation from a language model (`crosstrain.generate`, `crosstrain generate`).

Decoding runs the program's `predict_step` once per new token on one window of `block_size`
ids: the last `block_size` ids of the prompt and what came so far (cropped), right-padded
with id 0 to the full window, and reads the logits at the last real position. There is no
key-value cache: each token recomputes the whole window. The window always has the model's
input shape, so jax and Keras compile one program for the whole generation. Right padding
is exact only for a causal model (an output at position t reads inputs up to t): attention
must be `causal: true`, which is checked.

Sampling is on the host from the logits as float64 with numpy's seeded generator: `temperature`
0 is greedy (argmax; the same tokens on every backend), else the logits divided by it, kept to
the `top_k` largest when given, softmax, one draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.data.tokenizers import Tokenizer, from_record
from crosstrain.data.windows import TokenWindows
from crosstrain.errors import CrosstrainError
from crosstrain.train.rundir import checkpoint_run_dir, read_tokenizer


def generation_window(spec: Any) -> int:
    """The model's window (`model.input_shape` `[block_size]`) after checking that it is a
    causal language model: ids in, `(block_size, vocab)` logits out."""
    from crosstrain.nn.model import plan, walk

    if spec.model is None or len(spec.model.input_shape) != 1:
        shape = None if spec.model is None else list(spec.model.input_shape)
        raise CrosstrainError(
            f"generate needs a model over token windows (model.input_shape [block_size]); "
            f"this one takes {shape}"
        )
    nodes = plan(spec.model)
    for node in walk(nodes):
        if node.layer.type == "MultiHeadSelfAttention" and not node.layer.causal:
            raise CrosstrainError(
                f"generate needs a causal model: {node.path} (MultiHeadSelfAttention) has "
                "causal: false, so a position would see the tokens after it"
            )
    block = int(spec.model.input_shape[0])
    out = tuple(nodes[-1].output_shape) if nodes else ()
    if len(out) != 2 or out[0] != block:
        raise CrosstrainError(
            f"generate needs logits per position, shape [{block}, vocab]; the model gives {list(out)}"
        )
    return block


def find_tokenizer(meta: dict[str, Any], checkpoint: Path, spec: Any) -> Tokenizer:
    """The tokenizer a checkpoint was trained with: its `trainer.json`, else its run
    directory's `tokenizer.json`, else the one the spec's text source makes (its cache)."""
    record = meta.get("tokenizer") or read_tokenizer(checkpoint_run_dir(checkpoint))
    if record is not None:
        return from_record(record, f"{checkpoint}: tokenizer")
    if spec.data.source is not None:
        from crosstrain.spec.resolve import load_data

        data = spec.data.model_copy(update={"validation_split": 0.0})
        loaded, _ = load_data(spec.model_copy(update={"data": data}))
        if isinstance(loaded, TokenWindows) and loaded.tokenizer is not None:
            return from_record(loaded.tokenizer, f"data.source {spec.data.source!r}: tokenizer")
    raise CrosstrainError(
        f"{checkpoint}: no tokenizer (neither in the checkpoint, its run directory nor "
        "data.source): generate needs the tokenizer the model was trained with (a text: source, "
        "or tokens: with data.options.tokenizer)"
    )


def sample(logits: np.ndarray, temperature: float, top_k: int | None, rng: Any) -> int:
    """One id from a row of logits (see the module)."""
    logits = np.asarray(logits, np.float64)
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = logits / temperature
    if top_k is not None and top_k < len(scaled):
        cut = np.partition(scaled, -top_k)[-top_k]
        scaled = np.where(scaled < cut, -np.inf, scaled)
    weights = np.exp(scaled - scaled.max())
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def generate_ids(
    program: Any,
    prompt: Sequence[int],
    block: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    vocab_size: int | None = None,
) -> list[int]:
    """The ids that follow `prompt`, one `predict_step` each (see the module); only ids below
    `vocab_size` (the tokenizer's: a model may have more logits than it has tokens)."""
    if temperature < 0:
        raise CrosstrainError(f"temperature must be 0 (greedy) or more, got {temperature}")
    if top_k is not None and top_k < 1:
        raise CrosstrainError(f"top_k must be at least 1, got {top_k}")
    if not prompt:
        raise CrosstrainError("generate needs a prompt of at least one token")
    rng = np.random.default_rng(seed)
    ids, new = list(prompt), []
    window = np.zeros((1, block), np.int64)
    for _ in range(max_new_tokens):
        context = ids[-block:]
        window[:] = 0
        window[0, : len(context)] = context
        logits = program.predict_step(window)
        row = np.asarray(logits)[0, len(context) - 1, :vocab_size]
        token = sample(row, temperature, top_k, rng)
        ids.append(token)
        new.append(token)
    return new


def generate_text(
    program: Any,
    spec: Any,
    meta: dict[str, Any],
    checkpoint: Path,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """`prompt` and its continuation from a program holding `checkpoint`'s state (`meta`: its
    trainer.json, where the tokenizer is)."""
    block = generation_window(spec)
    tokenizer = find_tokenizer(meta, checkpoint, spec)
    ids = tokenizer.encode(prompt)
    new = generate_ids(
        program, ids, block, max_new_tokens, temperature, top_k, seed, tokenizer.vocab_size
    )
    return tokenizer.decode(ids + new)
