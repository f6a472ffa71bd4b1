"""The learning-rate range test (`crosstrain lr-find SPEC`, `crosstrain.lr_find`).

A short fit whose lr grows exponentially from `min_lr` to `max_lr` over `steps` optimizer
steps (the `exponential` schedule, so every backend applies it inside its own compiled step),
recording the training loss of every step and stopping once the smoothed loss exceeds
`divergence` times its best. The suggestion is the lr where the smoothed loss falls fastest
against log(lr), the usual rule of fastai and Lightning's finder; the plot shows why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crosstrain.errors import CrosstrainError, import_optional
from crosstrain.train.callbacks import Callback, last_update_lr

if TYPE_CHECKING:
    from crosstrain.spec.schema import Spec
    from matplotlib.figure import Figure

MEMORY = 0.05
"""The loss's moving average (bias-corrected) remembers about this fraction of the sweep:
weight `1 - 1 / (MEMORY × steps)` on the past, 0.8 for 100 steps, 0.98 for 1,000 (fastai's
fixed 0.98 lags a short sweep by tens of steps and suggests too large an lr)."""


def range_test_spec(spec: Spec, min_lr: float, max_lr: float, steps: int) -> Spec:
    """`spec` as the range test runs it: lr from `min_lr` growing to `max_lr` at step
    `steps - 1`, a loss pulled every step, no validation, checkpoints, loggers or early stop."""
    if not 0 < min_lr < max_lr:
        raise CrosstrainError(f"lr-find: need 0 < min_lr < max_lr, got {min_lr:g} and {max_lr:g}")
    if steps < 3:
        raise CrosstrainError(f"lr-find: --steps must be at least 3, got {steps}")
    trainer = {
        "max_steps": steps,
        "max_epochs": 1_000_000,  # max_steps ends it
        "log_every_n_steps": 1,
        "limit_val_batches": 0,
        "val_check_interval": None,
        "checkpoint": None,
        "loggers": [],
        "callbacks": [],
        "early_stopping": None,
        "progress": False,
        "on_nan": "raise",
        "detect_anomaly": False,  # a diverging loss is the test's end, not an error
        "fast_dev_run": False,
    }
    changes: dict[str, Any] = {f"trainer.{key}": value for key, value in trainer.items()}
    changes["optimizer.lr"] = min_lr
    changes["schedule"] = {"name": "exponential", "end_ratio": max_lr / min_lr}
    return spec.override(changes)


class LossRecorder(Callback):
    """Records `(lr, loss)` of every training step; stops the fit when the smoothed loss passes
    `divergence` × its best (or is not finite)."""

    def __init__(self, divergence: float, steps: int) -> None:
        self.divergence = divergence
        self.smoothing = max(0.0, 1.0 - 1.0 / max(1.0, MEMORY * steps))
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self._average = 0.0
        self.stopped_at: int | None = None

    def on_batch_end(self, trainer: Any, stage: str, logs: dict[str, float] | None) -> None:
        if stage != "train" or not logs or "train_loss" not in logs:
            return
        step = trainer.global_step - 1
        self.lrs.append(last_update_lr(trainer))
        loss = logs["train_loss"]
        self.losses.append(loss)
        if not math.isfinite(loss):
            self.stopped_at, trainer.should_stop = step, True
            return
        beta = self.smoothing
        self._average = beta * self._average + (1 - beta) * loss
        smoothed = self._average / (1 - beta ** (len(self.smoothed) + 1))
        self.smoothed.append(smoothed)
        if smoothed > self.divergence * min(self.smoothed):
            self.stopped_at, trainer.should_stop = step, True


@dataclass
class LrFindResult:
    """What the range test saw and suggests.

    Attributes:
        lrs, losses: the lr and training loss of each step run.
        smoothed: the bias-corrected moving average of `losses` (finite steps only).
        suggestion: the lr where `smoothed` falls fastest against log(lr); None when the loss
            never fell.
        stopped_at: the step at which the loss diverged, or None when all steps ran.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    stopped_at: int | None = None
    backend: str = ""
    notes: list[str] = field(default_factory=list)

    def plot(self, path: str | Path | None = None) -> Figure:
        """Loss (raw and smoothed) against lr on a log axis, the suggestion marked; saved as
        PNG when `path` is given."""
        figure_module = import_optional("matplotlib.figure", "lr-find --plot", "notebook")
        figure = figure_module.Figure(figsize=(6, 4), layout="tight")
        ax = figure.subplots()
        ax.plot(self.lrs, self.losses, linewidth=0.8, alpha=0.4, label="loss")
        ax.plot(self.lrs[: len(self.smoothed)], self.smoothed, linewidth=1.5, label="smoothed")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="red", linestyle="--", label=f"{self.suggestion:.2g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss")
        ax.set_title(f"lr range test ({self.backend})" if self.backend else "lr range test")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(Path(path), format="png", dpi=100)
        return figure


def suggest(lrs: list[float], smoothed: list[float]) -> float | None:
    """The lr of the steepest descent of `smoothed` against log(lr), ignoring the first tenth
    of the steps (the moving average's warm-up) and steps after the minimum; None when the
    loss never fell."""
    count = len(smoothed)
    if count < 3:
        return None
    start, end = count // 10, min(range(count), key=smoothed.__getitem__)
    if end - start < 2:
        return None
    slopes = [
        (smoothed[i + 1] - smoothed[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
        for i in range(max(start, 1), end)
    ]
    best = min(range(len(slopes)), key=slopes.__getitem__)
    return lrs[max(start, 1) + best] if slopes[best] < 0 else None


def result_of(recorder: LossRecorder, backend: str) -> LrFindResult:
    """The `LrFindResult` of a finished range test."""
    return LrFindResult(
        recorder.lrs,
        recorder.losses,
        recorder.smoothed,
        suggest(recorder.lrs, recorder.smoothed),
        recorder.stopped_at,
        backend,
    )
