"""examples/char_gpt.yaml learns (issue 23's proof): on torch, jax and keras:jax a shortened run
reaches a validation loss below the unigram entropy of its corpus by MARGIN nats.

Cut down for the suite: the example's corpus (`text:docs`, char tokenizer, split by document),
its layer structure (token + learned position embedding, pre-norm causal attention and GELU
MLP residual blocks, AdamW with warm-up and cosine decay) but 2 blocks of width 64 instead of 4
of 128, batch 16 and STEPS optimizer steps, validation on VAL_BATCHES batches. The unigram
entropy is that of the token counts of the corpus the source builds (the memory-mapped cache);
beating it by MARGIN needs the model to use the preceding characters (a bigram model of English
text is already ~0.6 nats under it). The full-size model (~10M parameters, sequence 256) is
timed, not tested, in `benchmarks/gpt.py`. keras:jax runs in a fresh interpreter (one Keras
engine per process, tests/conftest.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import crosstrain as ct
import numpy as np
import pytest
from conftest import EXAMPLES, ROOT, call_in_fresh_python
from crosstrain.spec.resolve import load_data

STEPS, VAL_BATCHES, WIDTH = 300, 8, 64
MARGIN = 0.3  # nats under the unigram entropy


def short_spec(cache: str) -> dict[str, Any]:
    """examples/char_gpt.yaml with 2 blocks of width 64, STEPS steps, a short validation."""
    spec = ct.load_spec(EXAMPLES / "char_gpt.yaml").to_dict()
    layers = spec["model"]["layers"]
    embed, position, block, mlp, *_ = layers
    embed["dim"] = WIDTH
    block["layers"][1].update(num_heads=2, head_dim=WIDTH // 2)
    mlp["layers"][1]["units"] = 4 * WIDTH
    mlp["layers"][3]["units"] = WIDTH
    spec["model"]["layers"] = [embed, position, block, mlp, block, mlp, *layers[-2:]]
    spec["data"]["batch_size"] = 16
    spec["data"]["options"]["cache_dir"] = cache
    spec["optimizer"]["lr"] = 3e-3
    spec["schedule"]["warmup_steps"] = 20
    spec["trainer"].update(
        max_epochs=100, max_steps=STEPS, limit_val_batches=VAL_BATCHES, progress=False,
        loggers=[], log_every_n_steps=50,
    )  # fmt: skip
    return spec


def val_loss(spec: dict[str, Any], backend: str) -> float:
    """The validation loss after the shortened fit, run from the repository root."""
    import os

    os.chdir(ROOT)  # the example's corpus is text:docs
    result = ct.fit(spec, backend=backend, run_dir=False)
    return float(result.metrics["val_loss"])


def unigram_entropy(spec: dict[str, Any]) -> float:
    """Entropy (nats) of the corpus's token frequencies, from the tokens the source cached."""
    train, _ = load_data(ct.load_spec(spec))
    counts = np.bincount(np.asarray(train.tokens), minlength=train.vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], float]:
    cache = str(tmp_path_factory.mktemp("tokens"))
    spec = short_spec(cache)
    old = Path.cwd()
    try:
        import os

        os.chdir(ROOT)
        entropy = unigram_entropy(spec)
    finally:
        os.chdir(old)
    assert 2.5 < entropy < math.log(256)  # characters of English prose and code
    return spec, entropy


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax", "keras:jax"])
def test_char_gpt_beats_the_unigram_entropy(
    setup: tuple[dict[str, Any], float], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, entropy = setup
    monkeypatch.chdir(ROOT)
    if backend.startswith("keras:"):
        loss = call_in_fresh_python("test_char_gpt_learns", "val_loss", spec, backend)
    else:
        loss = val_loss(spec, backend)
    print(f"{backend}: val_loss {loss:.3f}, unigram entropy {entropy:.3f}")
    assert loss < entropy - MARGIN, f"{backend}: val_loss {loss:.3f}, unigram entropy {entropy:.3f}"
