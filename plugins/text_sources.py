"""Text data sources: `text:PATH` (a file, or a directory of files, each one document) and
`tokens:PATH` (a ready token file, nanoGPT's `.bin`), both as next-token windows
(`crosstrain.data.windows.TokenWindows`).

`text:` tokenizes once and caches the tokens as a raw uint16 file (uint32 above 65536 ids) with
a `meta.json` (document offsets, the tokenizer's record) in
`<cache_dir>/<corpus sha256>-<tokenizer>/`: a second fit on the same files with the same
tokenizer memory-maps the cached file and starts at once. The cache directory is
`data.options.cache_dir`, else `$CROSSTRAIN_CACHE_DIR/tokens`, else `~/.cache/crosstrain/tokens`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
from crosstrain.data.tokenizers import Tokenizer, from_record, make_tokenizer
from crosstrain.data.windows import TokenWindows
from crosstrain.errors import DataError
from crosstrain.output import LOG
from crosstrain.plugin.hookspecs import hookimpl
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

CACHE_FORMAT = 1


class WindowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    block_size: PositiveInt = Field(
        description="tokens per window: model.input_shape is [block_size]"
    )
    stride: PositiveInt | None = Field(
        None, description="tokens between two window starts (default block_size; 1: every window)"
    )
    ids: Literal["int64", "int32"] = Field("int64", description="dtype of the drawn windows")


class TextOptions(WindowOptions):
    tokenizer: str = Field(
        "char",
        description="char (vocabulary built from the corpus), gpt2 (tiktoken, from its cache) "
        "or the path of a tokenizers tokenizer.json",
    )
    split_by: Literal["document", "position"] = Field(
        "position",
        description="validation_split holds out whole documents (files) or one seeded "
        "contiguous stretch of the tokens",
    )
    glob: str = Field("**/*", description="files of a directory that are documents")
    cache_dir: str | None = Field(
        None,
        description="token cache (default $CROSSTRAIN_CACHE_DIR/tokens or ~/.cache/crosstrain/tokens)",
    )


class TokensOptions(WindowOptions):
    dtype: Literal["uint16", "uint32"] = Field("uint16", description="dtype of the token file")
    tokenizer: str | None = Field(
        None,
        description="the tokenizer the file was made with (gpt2 or a tokenizer.json), for generation",
    )
    vocab_size: PositiveInt | None = Field(
        None, description="ids the tokens take (default: the tokenizer's, else the largest id + 1)"
    )


def cache_root(options: TextOptions) -> Path:
    if options.cache_dir:
        return Path(options.cache_dir)
    if os.environ.get("CROSSTRAIN_CACHE_DIR"):
        return Path(os.environ["CROSSTRAIN_CACHE_DIR"]) / "tokens"
    return Path.home() / ".cache" / "crosstrain" / "tokens"


def documents(path: Path, pattern: str) -> list[tuple[str, bytes]]:
    """`(name, bytes)` of each document: the file, or the directory's matching files (sorted by
    path; hidden ones and those that are not UTF-8 text are skipped)."""
    if path.is_file():
        return [(path.name, path.read_bytes())]
    if not path.is_dir():
        raise DataError(f"data.source: {path} does not exist")
    found = []
    for file in sorted(p for p in path.glob(pattern) if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        data = file.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            LOG.debug(f"text: skipping {file} (not UTF-8 text)")
            continue
        if b"\0" not in data:
            found.append((relative.as_posix(), data))
    if not found:
        raise DataError(f"data.source: {path} holds no UTF-8 text file matching {pattern!r}")
    return found


def tokenizer_key(option: str) -> str:
    """What names a tokenizer in the cache: its name, or the hash of its tokenizer.json."""
    if option == "char" or "/" not in option and not option.endswith(".json"):
        return option
    found = Path(option)
    if not found.is_file():
        raise DataError(f"data.options.tokenizer: {found} does not exist")
    return "json-" + hashlib.sha256(found.read_bytes()).hexdigest()[:16]


def corpus_hash(docs: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, data in docs:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:24]


def write_cache(folder: Path, docs: list[tuple[str, bytes]], tokenizer: Tokenizer) -> None:
    """Tokenizes the documents into `folder/tokens.bin` and `folder/meta.json` (the meta last,
    both renamed into place: a cache with a meta is whole)."""
    texts = [data.decode("utf-8") for _, data in docs]
    parts = [tokenizer.encode_array(text) for text in texts]
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    offsets = np.cumsum([0] + [len(p) for p in parts]).tolist()
    folder.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex
    temp = folder / f".tokens-{tag}.bin"
    with temp.open("wb") as handle:
        for part in parts:
            handle.write(part.astype(dtype).tobytes())
    temp.replace(folder / "tokens.bin")
    meta = {
        "format": CACHE_FORMAT,
        "dtype": np.dtype(dtype).name,
        "tokens": offsets[-1],
        "documents": offsets,
        "names": [name for name, _ in docs],
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": tokenizer.record(),
    }
    temp = folder / f".meta-{tag}.json"
    temp.write_text(json.dumps(meta), encoding="utf-8")
    temp.replace(folder / "meta.json")


def read_cache(folder: Path) -> dict[str, Any] | None:
    """The cache's meta when it is whole and of this format, else None (tokenize again)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        size = (folder / "tokens.bin").stat().st_size
    except (OSError, ValueError):
        return None
    if (
        meta.get("format") != CACHE_FORMAT
        or size != meta["tokens"] * np.dtype(meta["dtype"]).itemsize
    ):
        return None
    return meta


def token_map(path: Path, dtype: str) -> np.ndarray:
    if path.stat().st_size % np.dtype(dtype).itemsize:
        raise DataError(f"data.source: {path} is not a whole number of {dtype} tokens")
    return np.memmap(path, dtype=dtype, mode="r")


class TextSource:
    """`text:PATH`: next-token windows of a text file or a directory of text files."""

    options = TextOptions

    def check(self, argument: str) -> None:
        if not argument:
            raise ValueError("text needs a path: text:corpus.txt or text:folder/")

    def load(self, argument: str, options: TextOptions, seed: int) -> TokenWindows:
        docs = documents(Path(argument), options.glob)
        folder = cache_root(options) / f"{corpus_hash(docs)}-{tokenizer_key(options.tokenizer)}"
        meta = read_cache(folder)
        if meta is None:
            tokenizer = make_tokenizer(options.tokenizer, (d.decode("utf-8") for _, d in docs))
            write_cache(folder, docs, tokenizer)
            meta = read_cache(folder)
            LOG.info(f"text: {meta['tokens']} tokens of {len(docs)} document(s) cached in {folder}")
        else:
            LOG.debug(f"text: tokens from the cache {folder}")
        tokens = token_map(folder / "tokens.bin", meta["dtype"])
        return TokenWindows.over(
            tokens,
            options.block_size,
            options.stride or options.block_size,
            documents=np.asarray(meta["documents"], np.int64),
            split_by=options.split_by,
            ids=options.ids,
            vocab_size=int(meta["vocab_size"]),
            tokenizer=meta["tokenizer"],
            where=f"data.source 'text:{argument}'",
        )


class TokensSource:
    """`tokens:PATH`: next-token windows of a raw token file (nanoGPT's `train.bin`)."""

    options = TokensOptions

    def check(self, argument: str) -> None:
        if not argument:
            raise ValueError("tokens needs a path: tokens:train.bin")

    def load(self, argument: str, options: TokensOptions, seed: int) -> TokenWindows:
        path = Path(argument)
        if not path.is_file():
            raise DataError(f"data.source: {path} does not exist")
        tokens = token_map(path, options.dtype)
        if len(tokens) <= options.block_size:
            raise DataError(
                f"data.source: {path} holds {len(tokens)} tokens; a window of block_size "
                f"{options.block_size} needs {options.block_size + 1}"
            )
        tokenizer = None
        if options.tokenizer == "char":
            raise DataError(
                "data.options.tokenizer: a token file has no character vocabulary; give gpt2 or "
                "the tokenizer.json it was made with (or leave tokenizer out)"
            )
        if options.tokenizer is not None:
            tokenizer = make_tokenizer(options.tokenizer, ()).record()
        vocab = options.vocab_size
        if vocab is None and tokenizer is not None:
            vocab = from_record(tokenizer).vocab_size
        if vocab is None:  # one streaming pass over the map, in blocks
            vocab = 1 + max(
                int(tokens[i : i + (1 << 24)].max()) for i in range(0, len(tokens), 1 << 24)
            )
        return TokenWindows.over(
            tokens,
            options.block_size,
            options.stride or options.block_size,
            ids=options.ids,
            vocab_size=int(vocab),
            tokenizer=tokenizer,
            where=f"data.source 'tokens:{argument}'",
        )


@hookimpl
def crosstrain_add_data_sources(registry: Any) -> None:
    registry.data_sources.add("text", TextSource())
    registry.data_sources.add("tokens", TokensSource())
