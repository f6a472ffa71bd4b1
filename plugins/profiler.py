"""`trainer.profile: true`: where a fit's time went, per phase, and a native trace.

`Profiler` is a callback the built-in plugin adds for `trainer.profile`. At `on_fit_start` it
times, without touching the loop's code:

- `step` / `validation step`: the program's step calls (`train_step`, `accumulate_step`,
  `train_steps`; `eval_step`). On jax and keras:jax a step only dispatches work, which then
  shows up in `metric pull`, the host sync (`metrics_to_host`);
- `data`: producing the next batch (the pass's batch iterator, `Trainer.phase_timer`);
- `callbacks`: every hook call (pluggy's hook-call monitoring), less the time of
- `checkpoint`: `Trainer.save_checkpoint` (state to host, files, commit).

Times are exclusive (a checkpoint written inside a hook counts as checkpoint, not callbacks);
`other` is the rest of the fit's wall time (the loop's own bookkeeping, signal checks). The
backend's native profiler (`Program.trace`: torch.profiler, jax.profiler, the TF profiler)
records steps `TRACE_FIRST` to `TRACE_FIRST + TRACE_STEPS - 1` into `<run dir>/profile/`, after
the first step's compilation. The table goes to `<run dir>/profile.txt`, to
`FitResult.extras["profile"]` and to the `crosstrain` logger (the command line prints it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from crosstrain.output import LOG
from crosstrain.spec.summary import format_table
from crosstrain.train.callbacks import Callback

TRACE_FIRST = 2
"""The first training step the native trace records (step 1 compiles)."""
TRACE_STEPS = 20
"""How many training steps the native trace records (a trace of a whole run is huge)."""
TRACING = "native trace"
"""The phase of starting the framework's profiler and writing its trace (the steps it records
run slower too: read the traced steps' times in the trace, the others here)."""
PROFILE_FILE = "profile.txt"
TRACE_DIR = "profile"
STEP_METHODS = {
    "train_step": "step",
    "accumulate_step": "step",
    "train_steps": "step",
    "eval_step": "validation step",
    "metrics_to_host": "metric pull",
}


class PhaseTimer:
    """Wall time per phase, exclusive: a phase entered inside another is subtracted from it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list[Any]] = []  # [name, start, time of nested phases]

    def enter(self, name: str) -> None:
        self._stack.append([name, time.perf_counter(), 0.0])

    def leave(self) -> None:
        name, start, nested = self._stack.pop()
        spent = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + spent - nested
        self.calls[name] = self.calls.get(name, 0) + 1
        if self._stack:
            self._stack[-1][2] += spent

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.enter(name)
        try:
            yield
        finally:
            self.leave()

    def wrap(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)

        return timed

    def iterate(self, items: Iterable[Any], name: str = "data") -> Iterator[Any]:
        """`items`, the time each `next` takes counted as `name`."""
        iterator = iter(items)
        while True:
            with self.phase(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    def rows(self, total: float) -> list[dict[str, Any]]:
        """One row per phase, slowest first, then `other` (the rest of `total`)."""
        rows = [
            {"phase": name, "seconds": spent, "calls": self.calls[name]}
            for name, spent in sorted(self.seconds.items(), key=lambda item: -item[1])
        ]
        rows.append({"phase": "other", "seconds": max(0.0, total - sum(self.seconds.values()))})
        for row in rows:
            row["share"] = row["seconds"] / total if total > 0 else 0.0
        return rows


def profile_table(rows: list[dict[str, Any]], total: float) -> str:
    """The rows as text: phase, seconds, share of the fit, calls, mean per call."""
    cells = [
        [
            row["phase"],
            f"{row['seconds']:.3f}",
            f"{100 * row['share']:.1f}%",
            str(row.get("calls", "")),
            f"{1000 * row['seconds'] / row['calls']:.3f}" if row.get("calls") else "",
        ]
        for row in rows
    ]
    table = format_table(
        ["phase", "seconds", "share", "calls", "ms/call"], cells, right=[1, 2, 3, 4]
    )
    return f"where the time went ({total:.3f} s of fit):\n{table}"


class Profiler(Callback):
    """Times the phases of one fit and runs the backend's native trace (module docstring)."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir = run_dir
        self.timer = PhaseTimer()
        self._undo: list[Callable[[], None]] = []
        self._trace: contextlib.ExitStack | None = None
        self._start = 0.0
        self.note = ""

    def on_fit_start(self, trainer: Any) -> None:
        self._start = time.perf_counter()
        program = trainer.program
        for method, phase in STEP_METHODS.items():
            if hasattr(program, method):
                setattr(program, method, self.timer.wrap(getattr(program, method), phase))
                self._undo.append(lambda m=method: program.__dict__.pop(m, None))
        trainer.save_checkpoint = self.timer.wrap(trainer.save_checkpoint, "checkpoint")
        self._undo.append(lambda: trainer.__dict__.pop("save_checkpoint", None))
        trainer.phase_timer = self.timer
        self._undo.append(lambda: setattr(trainer, "phase_timer", None))
        pm = trainer.registry.pm
        self._undo.append(
            pm.add_hookcall_monitoring(
                lambda name, impls, kwargs: self.timer.enter("callbacks"),
                lambda outcome, name, impls, kwargs: self.timer.leave(),
            )
        )

    def on_batch_end(self, trainer: Any, stage: str) -> None:
        if stage != "train":
            return
        if trainer.global_step == TRACE_FIRST - 1 and self._trace is None:
            with self.timer.phase(TRACING):
                self._start_trace(trainer)
        elif trainer.global_step >= TRACE_FIRST - 1 + TRACE_STEPS and self._trace is not None:
            with self.timer.phase(TRACING):
                self._stop_trace()

    def _start_trace(self, trainer: Any) -> None:
        if self.run_dir is None:
            self.note = "no run directory: no native trace written"
            return
        self._trace = contextlib.ExitStack()
        try:
            self._trace.enter_context(trainer.program.trace(Path(self.run_dir) / TRACE_DIR))
        except Exception as err:  # a profiler that cannot start must not end the fit
            self._trace, self.note = None, f"native trace not written: {type(err).__name__}: {err}"

    def _stop_trace(self) -> None:
        if self._trace is not None:
            trace, self._trace = self._trace, None
            trace.close()

    def on_exception(self, trainer: Any) -> None:
        self._finish()

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        total = time.perf_counter() - self._start
        self._finish()
        rows = self.timer.rows(total)
        result.extras["profile"] = rows
        text = profile_table(rows, total)
        if self.note:
            text += f"\n{self.note}"
        LOG.info("\n" + text)
        if self.run_dir is not None:  # rank > 0 has none
            (Path(self.run_dir) / PROFILE_FILE).write_text(text + "\n", encoding="utf-8")

    def _finish(self) -> None:
        if self._trace is not None:
            with self.timer.phase(TRACING):
                self._stop_trace()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
