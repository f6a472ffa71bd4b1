"""Paired epochs: each timed epoch of a crosstrain fit is followed by one native epoch, so both
see the same machine state; shared by `jax_vs_native` and `keras_vs_native`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from crosstrain.train.callbacks import Callback


class PairedEpochs(Callback):
    """Times each training epoch of a fit and runs one native epoch (`native.run_epoch()`,
    returning its seconds) after it; `pairs` holds `(native seconds, crosstrain seconds)`."""

    def __init__(self, native: Any) -> None:
        self.native, self.pairs, self._start = native, [], 0.0

    def on_epoch_start(self, stage: str) -> None:
        if stage == "train":
            self._start = time.perf_counter()

    def on_epoch_end(self, stage: str) -> None:
        if stage == "train":
            elapsed = time.perf_counter() - self._start
            self.pairs.append((self.native.run_epoch(), elapsed))


def mlp_data(config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Seeded inputs and class targets for an MLP config (`sizes`, `batch`, `steps_per_epoch`)."""
    sizes, rows = config["sizes"], config["batch"] * config["steps_per_epoch"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, sizes[0])).astype(np.float32)
    return x, rng.integers(0, sizes[-1], rows)


def fit_pairs(
    native: Any, fit: Callable[[int, PairedEpochs], Any]
) -> dict[str, list[tuple[float, float]]]:
    """`fit(k, callback)` with steps_per_execution 1 and 10 (variants `fit`, `fit K=10`); the
    pairs of each, without the first (warm-up) epoch."""
    pairs = {}
    for variant, k in (("fit", 1), ("fit K=10", 10)):
        timer = PairedEpochs(native)
        fit(k, timer)
        pairs[variant] = timer.pairs[1:]
    return pairs
