"""Progress of a fit: a live bar on a terminal, one plain line per epoch everywhere else.

On a terminal (`sys.stdout.isatty()`) a rich bar shows the steps of the epoch, the latest
training loss, the throughput and the time left; each finished epoch leaves one line with
its metrics. In a Jupyter notebook the same bar is drawn by rich as a live widget (rich
renders through ipywidgets there). Elsewhere (CI, pipes, files) only those lines are printed:

    epoch 3/20  step 81  train_loss 0.2143  train_accuracy 0.9431  val_loss 0.2410  (1.2 s, 2150 samples/s)

Nothing here forces a host sync: the loss on the bar comes from the `logs` the trainer
already pulled. Off a terminal no per-batch hook is implemented at all, so the trainer skips
the per-batch dispatch when nothing else needs it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from crosstrain.plugin.hookspecs import hookimpl
from crosstrain.train.callbacks import Callback

REFRESH_PER_SECOND = 5
"""Redraws of the live bar per second (each costs about a millisecond of the main thread's GIL)."""

REFRESH_SECONDS = 0.1
"""The batch hook hands the bar new numbers at most this often."""


def format_value(value: float) -> str:
    """A metric value in a fixed, readable precision (`0.2143`, `1.25e-05`)."""
    if value == 0 or not math.isfinite(value) or abs(value) >= 1e-3:
        return f"{value:.4f}"
    return f"{value:.3g}"


def format_metrics(metrics: dict[str, float]) -> str:
    """`train_loss 0.2143  train_accuracy 0.9431 ...` in the order given."""
    return "  ".join(f"{key} {format_value(value)}" for key, value in metrics.items())


def format_duration(seconds: float) -> str:
    """`850 ms`, `1.2 s`, `3:05` (minutes) or `1:02:05` (hours)."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(steps: int, batch_size: int, seconds: float) -> str:
    """`1.2 s, 2150 samples/s` (samples counted as full batches), or only the time."""
    if steps <= 0 or seconds <= 0:
        return format_duration(max(seconds, 0.0))
    return f"{format_duration(seconds)}, {steps * batch_size / seconds:,.0f} samples/s"


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel, where rich draws live displays as widgets."""
    if "IPython" not in sys.modules:
        return False
    from rich import get_console

    return get_console().is_jupyter


def wants_live() -> bool:
    """A live bar on a terminal or in a notebook; plain lines everywhere else."""
    return sys.stdout.isatty() or in_notebook()


class ProgressBar(Callback):
    """The built-in progress display (`trainer.progress: true`, `--no-progress` turns it off).

    `ProgressBar()` gives the live bar when stdout is a terminal or the process is a Jupyter
    kernel, and the plain-line printer otherwise; pass `live=True` or `live=False` to choose.
    """

    def __new__(cls, live: bool | None = None) -> ProgressBar:
        if cls is ProgressBar and (wants_live() if live is None else live):
            cls = LiveProgressBar
        return super().__new__(cls)

    def __init__(self, live: bool | None = None) -> None:
        self.started = 0.0
        self.train_seconds: float | None = None
        self.first_batch = 0

    def _epochs(self, trainer: Any) -> int:
        if not trainer.steps_per_epoch:
            return trainer.spec.trainer.max_epochs
        return min(
            trainer.spec.trainer.max_epochs,
            math.ceil(trainer.total_steps / trainer.steps_per_epoch),
        )

    def _emit(self, line: str) -> None:
        print(line, flush=True)

    def epoch_line(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> str:
        """The line printed when a training epoch ends."""
        steps = trainer.batch_in_epoch - self.first_batch
        rate = format_rate(steps, trainer.spec.data.batch_size, self.train_seconds or 0.0)
        parts = [
            f"epoch {epoch + 1}/{self._epochs(trainer)}",
            f"step {trainer.global_step}",
            format_metrics(metrics),
            f"({rate})",
        ]
        return "  ".join(p for p in parts if p)

    def on_epoch_start(self, trainer: Any, stage: str, epoch: int) -> None:
        if stage == "val":
            self.train_seconds = time.perf_counter() - self.started
            return
        self.started = time.perf_counter()
        self.train_seconds = None
        self.first_batch = trainer.batch_in_epoch if stage == "train" else 0

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage == "train":
            if self.train_seconds is None:
                self.train_seconds = time.perf_counter() - self.started
            self._emit(self.epoch_line(trainer, epoch, metrics))
        elif stage == "test":
            elapsed = format_duration(time.perf_counter() - self.started)
            self._emit("  ".join(p for p in ("test", format_metrics(metrics), f"({elapsed})") if p))


class LiveProgressBar(ProgressBar):
    """The terminal variant: a rich bar per epoch, cleared when the epoch line is printed."""

    def __init__(self, live: bool | None = None) -> None:
        super().__init__(live)
        self.progress: Any = None
        self.task: Any = None
        self.task_total: int | None = None
        self.last_refresh = 0.0
        self.console: Any = None  # a rich Console to draw on (None: rich's default, stdout)

    def _open(self) -> None:
        if self.progress is not None:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("eta"),
            TimeRemainingColumn(),
            transient=True,
            refresh_per_second=REFRESH_PER_SECOND,
            console=self.console,
        )
        self.progress.start()

    def close(self) -> None:
        """Stops the live display (also on errors), leaving the terminal as it was."""
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.task = None, None

    def _emit(self, line: str) -> None:
        if self.progress is not None:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            super()._emit(line)

    def on_epoch_start(self, trainer: Any, stage: str, epoch: int) -> None:
        super().on_epoch_start(trainer, stage, epoch)
        if stage == "val":
            if self.task is not None:  # the training bar stays, full, while validation runs
                self.progress.update(
                    self.task,
                    description=f"epoch {epoch + 1}/{self._epochs(trainer)} validating",
                    completed=self.task_total or trainer.batch_in_epoch,
                )
                self.progress.refresh()
            return
        if stage not in ("train", "test"):
            return
        self._open()
        if self.task is not None:
            self.progress.remove_task(self.task)
        total = (trainer.steps_per_epoch or None) if stage == "train" else None  # None: unknown
        self.task_total = total
        title = f"epoch {epoch + 1}/{self._epochs(trainer)}" if stage == "train" else "test"
        self.task = self.progress.add_task(
            title, total=total, completed=self.first_batch, loss="", rate=""
        )
        self.last_refresh = time.perf_counter()

    def on_batch_end(
        self, trainer: Any, stage: str, batch_index: int, logs: dict[str, float] | None
    ) -> None:
        if self.task is None or stage not in ("train", "test"):
            return
        now = time.perf_counter()
        last = self.task_total is not None and batch_index + 1 >= self.task_total
        if logs is None and not last and now - self.last_refresh < REFRESH_SECONDS:
            return
        self.last_refresh = now
        fields: dict[str, Any] = {}
        if logs and "train_loss" in logs:
            fields["loss"] = f"loss {format_value(logs['train_loss'])}"
        steps = batch_index + 1 - self.first_batch
        elapsed = now - self.started
        data = trainer.spec.data
        batch_size = (
            data.batch_size if stage == "train" else (data.eval_batch_size or data.batch_size)
        )
        if steps > 0 and elapsed > 0:
            fields["rate"] = f"{steps * batch_size / elapsed:,.0f} samples/s"
        self.progress.update(self.task, completed=batch_index + 1, **fields)
        if last:  # drawn at N/N now: the 5 Hz redraw may not come before the epoch line
            self.progress.refresh()

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage == "train" and self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
            self.progress.refresh()  # no stale bar of the finished epoch under its line
        elif stage == "test":
            self.close()
        super().on_epoch_end(trainer, stage, epoch, metrics)

    def on_fit_end(self, trainer: Any) -> None:
        self.close()

    @hookimpl(tryfirst=True)
    def on_exception(self, trainer: Any, exception: BaseException) -> None:
        self.close()
