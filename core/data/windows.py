"""Next-token windows over one token stream (the text sources `text:PATH` and `tokens:PATH`).

Sample `i` is the window starting at token `starts[i]`: `x = tokens[s : s + block]`,
`y = tokens[s + 1 : s + block + 1]`. `x` and `y` are strided views of the (memory-mapped)
token file with one row per token position (`sliding_window_view`), and the data set is an
index view of their rows: a batch copies its own windows only, cast to the id dtype, and
nothing copies the token file. Such views are never put on a device whole
(`ArrayData.cacheable`), since a copy would be `block` times the file.

The validation split holds out whole stretches of tokens, never windows that share tokens with
training windows: by document (a seeded choice of documents) or by position (a seeded
contiguous stretch of the stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from crosstrain.errors import DataError

from .arrays import ArrayData


def window_views(tokens: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)`: row `s` of `x` is `tokens[s : s + block]`, of `y` the same shifted by one
    (views; `len(tokens) - block` rows)."""
    if len(tokens) <= block:
        raise DataError(
            f"the token stream has {len(tokens)} tokens, fewer than block_size + 1 "
            f"({block + 1}): one window needs that many"
        )
    view = np.lib.stride_tricks.sliding_window_view
    return view(tokens[:-1], block), view(tokens[1:], block)


def runs(mask: np.ndarray, bounds: np.ndarray) -> list[tuple[int, int]]:
    """Stretches `[begin, end)` of adjacent documents whose `mask` is true; document `d` spans
    `bounds[d]:bounds[d + 1]`."""
    found: list[tuple[int, int]] = []
    for d in np.flatnonzero(mask):
        begin, end = int(bounds[d]), int(bounds[d + 1])
        if found and found[-1][1] == begin:
            found[-1] = (found[-1][0], end)
        else:
            found.append((begin, end))
    return found


@dataclass
class TokenWindows(ArrayData):
    """Next-token windows (see the module). `index` holds the window starts.

    Attributes:
        tokens: the token stream (a memory map of the cache file).
        block: tokens per window (`block_size`).
        stride: tokens between two window starts.
        documents: token offsets where each document starts, then the end (split by document);
            None: one stream.
        split_by: `document` or `position`.
        ids: the dtype windows are drawn as (int64 or int32).
        vocab_size: the tokenizer's vocabulary (or the largest id + 1 of a token file).
        tokenizer: the tokenizer's record (`crosstrain.data.tokenizers`), or None.
    """

    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint16))
    block: int = 1
    stride: int = 1
    documents: np.ndarray | None = None
    split_by: str = "position"
    ids: str = "int64"
    vocab_size: int = 0
    tokenizer: dict[str, Any] | None = None
    where: str = "data.source"

    cacheable: ClassVar[bool] = False

    @classmethod
    def over(cls, tokens: np.ndarray, block: int, stride: int, **facts: Any) -> TokenWindows:
        """Every window of `tokens`, `stride` apart."""
        x, y = window_views(tokens, block)
        starts = np.arange(0, len(tokens) - block, stride, dtype=np.int64)
        return cls(x, y, starts, tokens=tokens, block=block, stride=stride, **facts)

    def draw(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x[rows].astype(self.ids), self.y[rows].astype(self.ids)

    def holdout(self, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Window positions of training and validation: a seeded `fraction` of the documents,
        or a seeded contiguous `fraction` of the tokens; a window that would read tokens of
        both sides is in neither."""
        rng = np.random.default_rng([seed, 7])
        n = len(self.tokens)
        if self.split_by == "document":
            bounds = self.documents if self.documents is not None else np.array([0, n])
            count = len(bounds) - 1
            if count < 2:
                raise DataError(
                    f"{self.where}: split_by document needs at least 2 documents and the corpus "
                    "has 1; use a directory of files or split_by: position"
                )
            held = np.zeros(count, bool)
            held[rng.permutation(count)[: min(count - 1, max(1, round(count * fraction)))]] = True
            stretches = sorted([(b, e, False) for b, e in runs(~held, bounds)]
                               + [(b, e, True) for b, e in runs(held, bounds)])  # fmt: skip
        else:
            size = max(self.block + 1, round(n * fraction))
            begin = int(rng.integers(0, max(1, n - size + 1)))
            stretches = [(0, begin, False), (begin, begin + size, True), (begin + size, n, False)]
        begins = np.array([b for b, _, _ in stretches])
        held_out = np.array([h for _, _, h in stretches])
        starts = self.source_rows(np.arange(len(self)))
        first = np.searchsorted(begins, starts, "right") - 1
        inside = first == np.searchsorted(begins, starts + self.block, "right") - 1
        train = np.flatnonzero(inside & ~held_out[first])
        val = np.flatnonzero(inside & held_out[first])
        if not len(train) or not len(val):
            which = "training" if not len(train) else "validation"
            raise DataError(
                f"{self.where}: the {which} split holds no window of block_size {self.block} + 1 "
                f"tokens (split_by {self.split_by}, validation_split {fraction}, {n} tokens); "
                "use a larger corpus, a smaller block_size or another validation_split"
            )
        return train, val

    def check_model(self, spec: Any) -> None:
        """DataError when the model's Embedding or its output is smaller than the vocabulary."""
        from .inputs import first_layer
        from .targets import _model_output

        if spec is None or spec.model is None or not self.vocab_size:
            return
        found = first_layer(spec)
        vocab = getattr(found[0], "vocab_size", None) if found is not None else None
        if vocab is not None and vocab < self.vocab_size:
            raise DataError(
                f"{self.where}: the tokens take {self.vocab_size} ids but {found[1]} "
                f"({found[0].type}) has vocab_size {vocab}; set it to at least {self.vocab_size}"
            )
        output = _model_output(spec)
        if output is not None and output[0] and output[0][-1] < self.vocab_size:
            raise DataError(
                f"{self.where}: the tokens take {self.vocab_size} ids but the model's output "
                f"({output[1]}) has {output[0][-1]} logits per position; make it at least "
                f"{self.vocab_size}"
            )
