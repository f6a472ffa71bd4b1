"""The benchmark tasks: one spec each, synthetic (or digits) data, and the run length.

Every runner of a task trains the same architecture with Adam on the same data for the same
number of steps, split into equal epochs; the first epoch is warm-up (compilation, caches,
allocator) and is not timed. Specs carry no metrics (loss only), no schedule, no progress bar,
no loggers and no checkpoints, so crosstrain does what the hand-written loops do.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

PULL_EVERY = 50
"""Steps between host reads of the loss, for crosstrain (`log_every_n_steps`) and native loops."""


@dataclass(frozen=True)
class Task:
    """One benchmark task.

    Attributes:
        key: `A`, `B`, `C` or `D`.
        title: what it measures, for tables.
        layers: the neutral layer list of the spec.
        input_shape: per-sample input shape (channels-last).
        batch: batch size.
        steps_per_epoch: optimizer steps per epoch.
        epochs: epochs; the first is warm-up.
        lr: Adam learning rate.
        vocab: token vocabulary for integer inputs (0: float inputs).
        classes: number of classes.
    """

    key: str
    title: str
    layers: tuple[dict[str, Any], ...]
    input_shape: tuple[int, ...]
    batch: int
    steps_per_epoch: int
    epochs: int
    lr: float = 1e-3
    vocab: int = 0
    classes: int = 10

    @property
    def steps(self) -> int:
        """All optimizer steps of one run."""
        return self.steps_per_epoch * self.epochs

    def sized(self, steps: int | None = None, epochs: int | None = None) -> Task:
        """The same task with `steps` in all (split over `epochs`), at least one step per epoch."""
        epochs = epochs or self.epochs
        per_epoch = max(1, (steps or self.steps) // epochs)
        return replace(self, steps_per_epoch=per_epoch, epochs=epochs)

    def spec(self) -> dict[str, Any]:
        """The crosstrain spec (as a dict) of this task."""
        return {
            "name": f"bench-{self.key}",
            "seed": 0,
            "data": {"batch_size": self.batch, "shuffle": True},
            "model": {"input_shape": list(self.input_shape), "layers": list(self.layers)},
            "loss": "cross_entropy",
            "optimizer": {"name": "adam", "lr": self.lr},
            "trainer": {
                "max_epochs": self.epochs,
                "log_every_n_steps": PULL_EVERY,
                "progress": False,
                "loggers": [],
                "checkpoint": None,
            },
        }

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """`(x, y)` numpy arrays with exactly `steps_per_epoch * batch` samples (seeded)."""
        count = self.steps_per_epoch * self.batch
        rng = np.random.default_rng(0)
        if self.key == "C":
            from sklearn.datasets import load_digits

            digits = load_digits()
            index = rng.integers(0, len(digits.target), count)
            x = (digits.images[index] / 16.0).astype(np.float32)[..., None]
            return x, digits.target[index].astype(np.int64)
        if self.vocab:
            x = rng.integers(0, self.vocab, (count, *self.input_shape)).astype(np.int64)
        else:
            x = rng.normal(size=(count, *self.input_shape)).astype(np.float32)
        return x, rng.integers(0, self.classes, count).astype(np.int64)


def _mlp(sizes: tuple[int, ...]) -> tuple[dict[str, Any], ...]:
    layers: list[dict[str, Any]] = []
    for units in sizes[1:-1]:
        layers += [{"type": "Dense", "units": units}, {"type": "ReLU"}]
    return (*layers, {"type": "Dense", "units": sizes[-1]})


def _digits_cnn() -> tuple[dict[str, Any], ...]:
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parent.parent / "examples" / "digits_cnn.yaml"
    return tuple(yaml.safe_load(path.read_text(encoding="utf-8"))["model"]["layers"])


SEQUENCE, DIM, HEADS, VOCAB = 32, 64, 4, 1000

TASKS: dict[str, Task] = {
    "A": Task(
        "A", "MLP 64-128-128-10, batch 32 (overhead)", _mlp((64, 128, 128, 10)), (64,), 32, 200, 10
    ),
    "B": Task(
        "B",
        "MLP 784-1024-1024-10, batch 256 (compute)",
        _mlp((784, 1024, 1024, 10)),
        (784,),
        256,
        20,
        6,
    ),
    "C": Task(
        "C",
        "digits CNN (examples/digits_cnn.yaml), batch 64",
        _digits_cnn(),
        (8, 8, 1),
        64,
        25,
        8,
        lr=3e-3,
    ),
    "D": Task(
        "D",
        f"transformer block, {SEQUENCE} tokens × {DIM}, batch 32",
        (
            {"type": "Embedding", "vocab_size": VOCAB, "dim": DIM},
            {
                "type": "Residual",
                "layers": [
                    {"type": "LayerNorm"},
                    {
                        "type": "MultiHeadSelfAttention",
                        "num_heads": HEADS,
                        "head_dim": DIM // HEADS,
                    },
                ],
            },
            {
                "type": "Residual",
                "layers": [
                    {"type": "LayerNorm"},
                    {"type": "Dense", "units": 2 * DIM},
                    {"type": "GELU"},
                    {"type": "Dense", "units": DIM},
                ],
            },
            {"type": "GlobalAvgPool"},
            {"type": "Dense", "units": 10},
        ),
        (SEQUENCE,),
        32,
        50,
        8,
        vocab=VOCAB,
    ),
}
