"""Text data and generation (issue 23): `text:PATH` and `tokens:PATH` next-token windows over a
memory-mapped token cache (a second fit does not tokenize again), splits by document and by
position that share no token, tokenizers saved with the run, and `generate` on every backend
(greedy decoding gives the same text on torch, jax and keras:jax)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import crosstrain as ct
import numpy as np
import pytest
from conftest import EXAMPLES, ROOT, call_in_fresh_python
from crosstrain.api import find_checkpoint
from crosstrain.cli.generate import DESCRIPTION
from crosstrain.cli.main import main
from crosstrain.data.arrays import memory_mapped
from crosstrain.data.tokenizers import CharTokenizer
from crosstrain.errors import CrosstrainError, DataError
from crosstrain.spec.resolve import load_data

BLOCK = 8
TEXTS = {
    "a.txt": "the cat sat on the mat. " * 6,
    "b.txt": "a dog ran in the fog. " * 6,
    "c.txt": "to be or not to be. " * 6,
    "d.txt": "we sat at the sea. " * 6,
}


def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    for name, text in TEXTS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def lm_spec(source: str, options: dict[str, Any], **data: Any) -> dict[str, Any]:
    """A tiny causal character model (vocab 32) over windows of BLOCK."""
    return {
        "name": "tiny-lm",
        "seed": 0,
        "data": {"source": source, "options": {"block_size": BLOCK, **options}, "batch_size": 16,
                 **data},
        "model": {
            "input_shape": [BLOCK],
            "layers": [
                {"type": "Embedding", "vocab_size": 32, "dim": 16},
                {"type": "Residual", "layers": [{"type": "PositionEmbedding", "sequence_length": BLOCK}]},
                {"type": "Residual", "layers": [
                    {"type": "LayerNorm"},
                    {"type": "MultiHeadSelfAttention", "num_heads": 2, "head_dim": 8, "causal": True},
                ]},
                {"type": "LayerNorm"},
                {"type": "Dense", "units": 32},
            ],
        },
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 1e-2},
        "trainer": {"max_epochs": 3, "progress": False, "loggers": []},
    }  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSTRAIN_CACHE_DIR", str(tmp_path / "cache"))


def test_windows_are_next_token_views_of_a_cached_memory_map(tmp_path: Path) -> None:
    spec = ct.load_spec(lm_spec(f"text:{corpus(tmp_path)}", {"tokenizer": "char", "stride": 3}))
    data, val = load_data(spec)
    assert val is None and memory_mapped(data.x) and memory_mapped(data.y)
    x, y = data.rows(np.arange(len(data)))
    assert x.dtype == np.int64 and x.shape == (len(data), BLOCK)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    (cached,) = (tmp_path / "cache" / "tokens").glob("*-char")
    tokens = np.fromfile(cached / "tokens.bin", dtype=np.uint16)
    np.testing.assert_array_equal(x[1], tokens[3 : 3 + BLOCK])  # stride 3
    chars = CharTokenizer(data.tokenizer["chars"])
    assert chars.decode(tokens) == "".join(TEXTS.values())
    assert data.vocab_size == len(set("".join(TEXTS.values())))
    assert json.loads((cached / "meta.json").read_text())["documents"][-1] == len(tokens)


def _window_tokens(data: Any) -> set[int]:
    starts = data.source_rows(np.arange(len(data)))
    return {int(s) + k for s in starts for k in range(BLOCK + 1)}


@pytest.mark.parametrize("split_by", ["document", "position"])
def test_split_holds_out_whole_stretches(tmp_path: Path, split_by: str) -> None:
    spec = lm_spec(f"text:{corpus(tmp_path)}", {"tokenizer": "char", "split_by": split_by,
                                               "stride": 1}, validation_split=0.25)  # fmt: skip
    train, val = load_data(ct.load_spec(spec))
    assert not _window_tokens(train) & _window_tokens(val)  # no token on both sides
    held = sorted(_window_tokens(val))
    if split_by == "document":  # one whole file of four
        lengths = [len(t) for t in TEXTS.values()]
        bounds = np.cumsum([0, *lengths])
        d = int(np.searchsorted(bounds, held[0], "right") - 1)
        assert held == list(range(bounds[d], bounds[d + 1]))
    else:  # one contiguous stretch
        assert held == list(range(held[0], held[-1] + 1))
    again, _ = load_data(ct.load_spec(spec))  # seeded
    np.testing.assert_array_equal(again.index, train.index)
    with pytest.raises(DataError, match="needs at least 2 documents"):
        one = lm_spec(f"text:{corpus(tmp_path) / 'a.txt'}", {"split_by": "document"},
                      validation_split=0.25)  # fmt: skip
        load_data(ct.load_spec(one))


def test_tokens_file_of_uint16_and_uint32(tmp_path: Path) -> None:
    ids = np.arange(300) % 29
    for dtype in ("uint16", "uint32"):
        path = tmp_path / f"train-{dtype}.bin"
        ids.astype(dtype).tofile(path)
        data, _ = load_data(
            ct.load_spec(lm_spec(f"tokens:{path}", {"dtype": dtype, "ids": "int32"}))
        )
        x, y = data.rows(np.array([0, 1]))
        assert x.dtype == np.int32 and data.vocab_size == 29
        np.testing.assert_array_equal(x[1], ids[BLOCK : 2 * BLOCK])
        np.testing.assert_array_equal(y[0], ids[1 : BLOCK + 1])
    small = lm_spec(f"tokens:{path}", {"dtype": "uint32", "vocab_size": 40})
    with pytest.raises(DataError, match="take 40 ids but model.layers\\[0\\] .*vocab_size 32"):
        load_data(ct.load_spec(small))


def _word_level(path: Path, words: list[str]) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))
    return path


def test_tokenizer_json_and_a_vocabulary_over_65536_ids(tmp_path: Path) -> None:
    big = [f"w{i}" for i in range(70000)]
    path = _word_level(tmp_path / "tokenizer.json", big)
    (tmp_path / "words.txt").write_text(" ".join(f"w{i * 7919 % 70000}" for i in range(40)))
    spec = lm_spec(f"text:{tmp_path / 'words.txt'}", {"tokenizer": str(path)})
    spec["model"]["layers"][0]["vocab_size"] = spec["model"]["layers"][-1]["units"] = 70000
    data, _ = load_data(ct.load_spec(spec))
    assert data.tokens.dtype == np.uint32 and data.vocab_size == 70000
    assert data.rows(np.array([0]))[0][0, 1] == 7919
    assert data.tokenizer["kind"] == "tokenizers"


def test_gpt2_without_tiktoken_files_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    spec = lm_spec(f"text:{corpus(tmp_path)}", {"tokenizer": "gpt2"})
    with pytest.raises(DataError, match="tiktoken's GPT-2 BPE files are not on this machine"):
        load_data(ct.load_spec(spec))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """A tiny model trained on torch with a checkpoint; its spec and checkpoint."""
    tmp = tmp_path_factory.mktemp("lm")
    spec = lm_spec(f"text:{corpus(tmp)}", {"tokenizer": "char", "cache_dir": str(tmp / "c")})
    result = ct.fit(spec, backend="torch", run_dir=tmp / "run")
    assert result.metrics["train_loss"] < 2.5
    return spec, find_checkpoint(ct.load_spec(spec), tmp / "run")


def test_second_fit_uses_the_cache_and_the_run_keeps_the_tokenizer(
    trained: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = trained  # its fit tokenized the corpus into data.options.cache_dir
    spec = json.loads(json.dumps(spec))
    spec["trainer"].update(max_epochs=1, limit_train_batches=1)

    def tokenize_again(self: Any, text: str) -> Any:
        raise AssertionError("tokenized again")

    monkeypatch.setattr(CharTokenizer, "encode_array", tokenize_again)
    ct.fit(spec, backend="torch", run_dir=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("step-*")
    assert json.loads((checkpoint / "trainer.json").read_text())["tokenizer"] == record
    assert record["kind"] == "char" and set(record["chars"]) == set("".join(TEXTS.values()))


def greedy(spec: dict[str, Any], checkpoint: str, backend: str) -> str:
    return ct.generate(spec, checkpoint, prompt="the c", max_new_tokens=12, temperature=0,
                       backend=backend)  # fmt: skip


def test_greedy_generation_is_the_same_on_torch_jax_and_keras_jax(trained: Any) -> None:
    spec, checkpoint = trained
    text = greedy(spec, str(checkpoint), "torch")
    assert (
        text.startswith("the c") and len(text) == 17 and set(text) <= set("".join(TEXTS.values()))
    )
    assert greedy(spec, str(checkpoint), "jax") == text
    assert call_in_fresh_python("test_text", "greedy", spec, str(checkpoint), "keras:jax") == text


def test_sampling_is_seeded_and_the_command_prints_it(trained: Any, capsys: Any) -> None:
    spec, checkpoint = trained
    args = dict(prompt="to", max_new_tokens=20, temperature=1.5, top_k=5, backend="torch")
    one = ct.generate(spec, checkpoint, seed=1, **args)
    assert ct.generate(spec, checkpoint, seed=1, **args) == one
    assert ct.generate(spec, checkpoint, seed=2, **args) != one
    run = checkpoint.parent.parent  # a run directory stands for its spec and latest checkpoint
    assert ct.generate(run, seed=1, **args) == one
    code = main(["generate", str(run), "--prompt", "to", "--max-new-tokens", "20",
                 "--temperature", "1.5", "--top-k", "5", "--seed", "1", "-q"])  # fmt: skip
    assert code == 0 and capsys.readouterr().out.strip() == one.strip()
    assert "no key-value cache" in DESCRIPTION  # what `crosstrain generate --help` says
    with pytest.raises(DataError, match="'Z' is not in the vocabulary"):
        ct.generate(spec, checkpoint, prompt="Z", backend="torch")
    bidirectional = json.loads(json.dumps(spec))
    bidirectional["model"]["layers"][2]["layers"][1]["causal"] = False
    with pytest.raises(CrosstrainError, match="needs a causal model"):
        ct.generate(bidirectional, checkpoint, backend="torch")


def test_char_gpt_example_trains_and_generates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # its corpus is text:docs
    spec = ct.load_spec(EXAMPLES / "char_gpt.yaml").override(
        {
            "data.batch_size": 4,
            "trainer.max_epochs": 1,
            "trainer.limit_train_batches": 2,
            "trainer.limit_val_batches": 1,
            "trainer.progress": False,
        }
    )
    result = ct.fit(spec, backend="torch", run_dir=tmp_path / "run")
    assert np.isfinite(result.metrics["val_loss"])
    text = ct.generate(spec, tmp_path / "run", prompt="The spec", max_new_tokens=3, seed=0)
    assert text.startswith("The spec") and len(text) == 11
