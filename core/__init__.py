"""crosstrain: one training spec, every framework.

Importing this package imports no ML framework; a backend imports its own when it builds.

Example:
    >>> import crosstrain as ct
    >>> spec = ct.load_spec("examples/digits_mlp.yaml")           # doctest: +SKIP
    >>> result = ct.fit(spec.override({"trainer.max_epochs": 3}), backend="torch")  # doctest: +SKIP
    >>> result.metrics["val_accuracy"]                               # doctest: +SKIP
"""

from __future__ import annotations

from . import layers, losses, metrics, optim
from .api import build, evaluate, fit, predict
from .callbacks import Callback
from .errors import (
    BackendUnavailable,
    CheckpointError,
    CrosstrainError,
    PluginError,
    SpecError,
    TrainingError,
    UnsupportedFeature,
)
from .hookspecs import hookimpl, hookspec
from .module import Module
from .protocol import Backend, Capabilities, Program, RunEnv
from .registry import get_registry
from .spec import Spec, load_spec
from .state import CanonicalState
from .trainer import FitResult

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Callback",
    "CanonicalState",
    "Capabilities",
    "CheckpointError",
    "CrosstrainError",
    "FitResult",
    "Module",
    "PluginError",
    "Program",
    "RunEnv",
    "Spec",
    "SpecError",
    "TrainingError",
    "UnsupportedFeature",
    "build",
    "evaluate",
    "fit",
    "get_registry",
    "hookimpl",
    "hookspec",
    "layers",
    "load_spec",
    "losses",
    "metrics",
    "optim",
    "predict",
]
