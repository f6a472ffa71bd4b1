"""Which Keras engine runs, where, in which precision, on how many devices.

Keras picks its engine (`KERAS_BACKEND`) once, when it is first imported, so one process holds
one engine. `use_engine` makes that a rule: it sets `KERAS_BACKEND` before the first import and
refuses with a clear error when Keras is already loaded with another engine. Nothing here uses
`keras.utils.set_random_seed` (it imports tensorflow on every engine); layers get explicit seeds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any

from crosstrain.errors import BackendUnavailable, CrosstrainError, UnsupportedFeature

BACKEND = "keras"
ENGINES = ("tensorflow", "jax", "torch")
DEFAULT_ENGINE = "tensorflow"
ACCELERATOR_DEVICE = {"cpu": "cpu", "cuda": "gpu"}
"""crosstrain accelerator name → Keras device type (`keras.device("gpu:0")`)."""


class EngineConflict(CrosstrainError):
    """Keras is already imported with another engine in this process."""


def engine_of(backend: str) -> str:
    """The engine a backend name asks for: `keras:jax` → `jax`; plain `keras` → the engine of an
    already imported Keras, else `KERAS_BACKEND`, else tensorflow.

    Raises:
        UnsupportedFeature: the engine is not one of tensorflow, jax, torch.
    """
    _, _, engine = backend.partition(":")
    if not engine:
        engine = loaded_engine() or os.environ.get("KERAS_BACKEND") or DEFAULT_ENGINE
    if engine not in ENGINES:
        raise UnsupportedFeature(BACKEND, f"engine {engine!r}", list(ENGINES))
    return engine


def loaded_engine() -> str | None:
    """The engine of the Keras imported in this process, or None if Keras is not imported."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return str(keras.backend.backend())
    except AttributeError:  # a half-imported keras
        return os.environ.get("KERAS_BACKEND")


def engine_available(engine: str) -> tuple[bool, str]:
    """Whether keras and the engine's framework can be imported (checked without importing)."""
    missing = [name for name in ("keras", engine) if importlib.util.find_spec(name) is None]
    if missing:
        return False, f"{', '.join(missing)} not installed"
    return True, ""


def use_engine(engine: str) -> Any:
    """Imports Keras on `engine` and returns the `keras` module.

    Sets `KERAS_BACKEND` before the first import (an explicit engine wins over the variable).

    Raises:
        EngineConflict: Keras is already imported with another engine in this process.
        BackendUnavailable: keras or the engine's framework is not installed.
    """
    current = loaded_engine()
    if current is not None and current != engine:
        raise EngineConflict(
            f"Keras is already imported in this process with the {current!r} engine, so "
            f"'keras:{engine}' cannot run here: Keras fixes its engine when it is first imported "
            f"and one process holds one engine. Run each engine in its own process (e.g. "
            f"`crosstrain fit SPEC --backend keras:{engine}` in a fresh shell, or "
            f"KERAS_BACKEND={engine} before anything imports keras)."
        )
    if current is None:
        available, reason = engine_available(engine)
        if not available:
            raise BackendUnavailable(f"keras:{engine}", reason, engine)
        os.environ["KERAS_BACKEND"] = engine
    from crosstrain.output import native_stderr_silenced

    # TensorFlow's C++ start-up lines (and later the cuInit error on a machine without a GPU)
    # unless `crosstrain -v` or the user's own TF_CPP_MIN_LOG_LEVEL
    with native_stderr_silenced():
        import keras

    return keras


def found_accelerators(engine: str) -> list[str]:
    """Accelerators the engine's framework sees: `cpu`, then `cuda` when it has a GPU.

    Asks the framework itself (jax, torch or tensorflow), not Keras, so listing devices never
    fixes this process's Keras engine.
    """
    found = ["cpu"]
    if engine == "jax":
        import jax

        try:
            present = bool(jax.devices("gpu"))
        except RuntimeError:
            present = False
    elif engine == "torch":
        import torch

        present = torch.cuda.is_available()
    else:
        import tensorflow as tf

        present = bool(tf.config.list_physical_devices("GPU"))
    if present:
        found.append("cuda")
    return found


def select_devices(keras: Any, engine: str, accelerator: str, count: int) -> list[str]:
    """Keras device names (`cpu:0`, `gpu:1` ...) for the run; empty: the engine's default device.

    Raises:
        UnsupportedFeature: several devices on an engine other than jax.
        CrosstrainError: the accelerator is absent or has fewer than `count` devices.
    """
    if count > 1 and engine != "jax":
        raise UnsupportedFeature(
            f"keras:{engine}",
            f"devices={count} (data parallel runs on the jax engine)",
            ["devices=1"],
        )
    if accelerator == "auto" and count == 1:
        return []
    kind = None if accelerator == "auto" else ACCELERATOR_DEVICE.get(accelerator)
    if accelerator != "auto" and kind is None:
        raise UnsupportedFeature(
            f"keras:{engine}", f"accelerator {accelerator!r}", sorted(ACCELERATOR_DEVICE)
        )
    if accelerator != "auto" and accelerator not in found_accelerators(engine):
        raise CrosstrainError(f"accelerator {accelerator!r} not found by keras:{engine}")
    if count == 1:  # torch: `cpu:0` would move keras's integer variables off their Parameters
        return [kind if engine == "torch" else f"{kind}:0"]
    devices = [d.lower() for d in keras.distribution.list_devices(kind)]
    if len(devices) < count:
        hint = (
            " (on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N)"
            if devices and devices[0].startswith("cpu")
            else ""
        )
        raise CrosstrainError(
            f"{count} devices requested but keras:{engine} sees {len(devices)}{hint}"
        )
    return devices[:count]


@dataclass(frozen=True)
class Precision:
    """How a precision setting maps onto Keras.

    Attributes:
        name: the spec's precision.
        policy: the Keras dtype policy every layer gets (`float32`, `mixed_bfloat16` ...).
        loss_scaling: whether the optimizer is wrapped in `LossScaleOptimizer` (float16).
    """

    name: str
    policy: str
    loss_scaling: bool = False


PRECISIONS = {
    "32": Precision("32", "float32"),
    "bf16-mixed": Precision("bf16-mixed", "mixed_bfloat16"),
    "16-mixed": Precision("16-mixed", "mixed_float16", loss_scaling=True),
}


def precision_policy(precision: str) -> Precision:
    """The Keras mapping of a precision; UnsupportedFeature for one not listed in PRECISIONS."""
    if precision not in PRECISIONS:
        raise UnsupportedFeature(BACKEND, f"precision {precision!r}", sorted(PRECISIONS))
    return PRECISIONS[precision]


def data_parallel(keras: Any, devices: list[str]) -> Any:
    """`keras.distribution.DataParallel` over `devices` (None for one device): variables are
    replicated, batches split along their first axis, XLA adds the gradient all-reduce."""
    if len(devices) < 2:
        return None
    return keras.distribution.DataParallel(devices=devices)


def same_initial_draws(seed: int) -> None:
    """Seeds Python's `random`, from which Keras draws the seeds of unseeded initializers, so
    every process of a multi-process run creates identical variables (the jax distribution
    refuses values that differ between processes); the values are then overwritten with
    crosstrain's own initialisation anyway."""
    import random

    random.seed(seed)


def deterministic_engine(engine: str, before_import: bool) -> None:
    """`trainer.deterministic` on a Keras engine: the XLA flag before jax starts (jax),
    `tf.config.experimental.enable_op_determinism()` (tensorflow), deterministic torch kernels
    (torch), each as the engine's own backend does it."""
    if before_import and engine == "jax":
        from crosstrain.backends.jax.device import deterministic_xla

        deterministic_xla()
    elif not before_import and engine == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif not before_import and engine == "torch":
        from crosstrain.backends.torch.device import deterministic_torch

        deterministic_torch()
