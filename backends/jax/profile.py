"""The JAX profiler for `trainer.profile`: an XPlane trace that TensorBoard's profile plugin
or Perfetto opens (`plugins/profile/<time>/*.xplane.pb`, `*.trace.json.gz`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import jax


@contextlib.contextmanager
def trace(directory: Path) -> Iterator[None]:
    """Records the block with `jax.profiler.trace` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    with jax.profiler.trace(str(directory)):
        yield
