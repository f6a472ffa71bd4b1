"""The profiler of the Keras engine for `trainer.profile`: TensorFlow's on tensorflow (a
TensorBoard profile under `plugins/profile/`), JAX's on jax, torch's on torch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras


@contextlib.contextmanager
def trace(directory: Path) -> Iterator[None]:
    """Records the block with the engine's own profiler into `directory`."""
    engine = keras.backend.backend()
    if engine == "jax":
        from crosstrain.backends.jax.profile import trace as jax_trace

        with jax_trace(directory):
            yield
    elif engine == "torch":
        from crosstrain.backends.torch.profile import trace as torch_trace

        with torch_trace(directory):
            yield
    else:
        import tensorflow as tf

        directory.mkdir(parents=True, exist_ok=True)
        tf.profiler.experimental.start(str(directory))
        try:
            yield
        finally:
            tf.profiler.experimental.stop()
