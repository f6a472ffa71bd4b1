"""Tokenizers of the text sources (`text:PATH`, `tokens:PATH`) and of generation: characters
(a vocabulary built from the corpus), a Hugging Face `tokenizer.json` (the `tokenizers`
package) or tiktoken's GPT-2 BPE (only from tiktoken's cache: it downloads its files, which a
run never does behind the user's back).

Each tokenizer is described by a JSON record (`record()`), stored in the token cache, the run
directory (`tokenizer.json`) and every checkpoint's `trainer.json`, so generation decodes with
the vocabulary the model was trained on; `from_record` rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.errors import DataError, MissingDependency

GPT2_FILES = (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
)
"""What tiktoken reads for `gpt2` (tiktoken_ext/openai_public.py), cached under the sha1 of the
address in `$TIKTOKEN_CACHE_DIR`, `$DATA_GYM_CACHE_DIR` or `<tmp>/data-gym-cache`."""


class Tokenizer:
    """Text ↔ token ids. `key` names the tokenizer in the token cache (with the corpus hash)."""

    kind = ""
    vocab_size = 0

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` as an int64 array (what the text source caches)."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    """One id per character, in sorted order (nanoGPT's shakespeare_char)."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self.vocab_size = len(chars)
        self._ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        if not seen:
            raise DataError("tokenizer char: the corpus is empty")
        return cls("".join(sorted(seen)))

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Code points looked up in the sorted vocabulary (no Python loop per character)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)
        ids = np.minimum(np.searchsorted(table, codes), len(table) - 1)
        unknown = table[ids] != codes
        if unknown.any():
            raise DataError(
                f"tokenizer char: {chr(int(codes[np.flatnonzero(unknown)[0]]))!r} is not in the "
                f"vocabulary built from the corpus ({self.vocab_size} characters)"
            )
        return ids.astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def record(self) -> dict[str, Any]:
        return {"kind": "char", "chars": self.chars}


class JsonTokenizer(Tokenizer):
    """A Hugging Face `tokenizer.json` (BPE, WordPiece ...) through the `tokenizers` package."""

    kind = "tokenizers"

    def __init__(self, text: str, where: str = "tokenizer.json"):
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError:
            raise MissingDependency("tokenizer", "tokenizers", "text") from None
        try:
            self._tok = HFTokenizer.from_str(text)
        except Exception as err:  # the library's own parse error
            raise DataError(f"tokenizer {where}: not a tokenizers tokenizer.json ({err})") from None
        self.text = text
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_file(cls, path: str) -> JsonTokenizer:
        found = Path(path)
        if not found.is_file():
            raise DataError(f"data.options.tokenizer: {found} does not exist")
        return cls(found.read_text(encoding="utf-8"), str(found))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def record(self) -> dict[str, Any]:
        return {"kind": "tokenizers", "json": self.text}


def tiktoken_cache_dir() -> str:
    for name in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if name in os.environ:
            return os.environ[name]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


class TiktokenTokenizer(Tokenizer):
    """tiktoken's `gpt2` encoding, read from tiktoken's cache only (no download)."""

    kind = "tiktoken"

    def __init__(self, name: str = "gpt2"):
        try:
            import tiktoken
        except ImportError:
            raise MissingDependency("tokenizer gpt2", "tiktoken", "text") from None
        cache = tiktoken_cache_dir()
        missing = [
            url
            for url in GPT2_FILES
            if not cache
            or not os.path.isfile(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()))
        ]
        if missing:
            raise DataError(
                f"tokenizer {name}: tiktoken's GPT-2 BPE files are not on this machine (looked in "
                f"{cache or 'no cache: TIKTOKEN_CACHE_DIR is empty'}); tiktoken downloads them "
                f"from {missing[0].rsplit('/', 1)[0]}/ on first use and crosstrain does not. Run "
                "`python -c \"import tiktoken; tiktoken.get_encoding('gpt2')\"` once with network "
                "access (or set TIKTOKEN_CACHE_DIR to a folder that holds them), or give "
                "tokenizer: path/to/tokenizer.json or tokenizer: char"
            )
        self.name = name
        self._enc = tiktoken.get_encoding(name)
        self.vocab_size = self._enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode([int(i) for i in ids])

    def record(self) -> dict[str, Any]:
        return {"kind": "tiktoken", "name": self.name}


TIKTOKEN_NAMES = ("gpt2",)


def make_tokenizer(option: str, texts: Iterable[str]) -> Tokenizer:
    """The tokenizer `data.options.tokenizer` names: `char` (built from `texts`), `gpt2`
    (tiktoken) or a path to a `tokenizer.json`."""
    if option == "char":
        return CharTokenizer.from_texts(texts)
    if option in TIKTOKEN_NAMES:
        return TiktokenTokenizer(option)
    return JsonTokenizer.from_file(option)


def from_record(record: Any, where: str = "tokenizer") -> Tokenizer:
    """The tokenizer a stored record describes (`Tokenizer.record()`)."""
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind == "char" and isinstance(record.get("chars"), str):
        return CharTokenizer(record["chars"])
    if kind == "tokenizers" and isinstance(record.get("json"), str):
        return JsonTokenizer(record["json"], where)
    if kind == "tiktoken" and record.get("name") in TIKTOKEN_NAMES:
        return TiktokenTokenizer(record["name"])
    raise DataError(f"{where}: not a tokenizer record (kind {kind!r})")
