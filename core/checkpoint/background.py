"""Checkpoint writes on a background thread, one at a time (`trainer.checkpoint.async`).

The caller snapshots the state to host memory (`host_copy`) on its own thread, then hands a
write to `BackgroundWriter.submit`; the step loop goes on while the thread writes. At most one
write is in flight: `submit` first waits for the previous one. A write's error is raised on the
caller's thread by the next `poll`, `submit` or `wait`, never lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from crosstrain.checkpoint.format import CanonicalState


def host_copy(state: CanonicalState) -> CanonicalState:
    """A copy of `state` that owns its memory: a backend's arrays may be views of buffers the
    next step overwrites (torch CPU tensors) or donates (jax)."""
    copy = {k: np.array(v, copy=True) for k, v in state.params.items()}
    slots = {k: np.array(v, copy=True) for k, v in state.optimizer.items()}
    rng = {k: np.array(v, copy=True) for k, v in state.rng.items()}
    return CanonicalState(copy, slots, int(state.step), rng)


class BackgroundWriter:
    """Runs one write (a callable returning what it wrote) at a time on a daemon thread."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._outcome: tuple[Any, BaseException | None] = (None, None)

    @property
    def busy(self) -> bool:
        """Whether a write was submitted and its outcome not yet collected."""
        return self._thread is not None

    def submit(self, write: Callable[[], Any]) -> Any:
        """Waits for the write in flight (returns its result, or raises its error), then starts
        `write` on the thread and returns at once."""
        previous = self.wait()

        def run() -> None:
            try:
                self._outcome = (write(), None)
            except BaseException as err:  # handed to the caller's thread
                self._outcome = (None, err)

        self._thread = threading.Thread(target=run, name="crosstrain-checkpoint", daemon=True)
        self._thread.start()
        return previous

    def poll(self) -> Any:
        """The finished write's result (its error raised), or None while it runs or when idle."""
        if self._thread is not None and not self._thread.is_alive():
            return self.wait()
        return None

    def wait(self) -> Any:
        """Blocks until the write in flight ends; its result, or its error raised (None if idle)."""
        if self._thread is None:
            return None
        self._thread.join()
        self._thread = None
        (result, error), self._outcome = self._outcome, (None, None)
        if error is not None:
            raise error
        return result
