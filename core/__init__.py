"""crosstrain: one training spec, every framework.

Importing this package imports no ML framework; a backend imports its own when it builds.

Example:
    >>> import crosstrain as ct
    >>> spec = ct.load_spec("examples/digits_mlp.yaml")           # doctest: +SKIP
    >>> result = ct.fit(spec.override({"trainer.max_epochs": 3}), backend="torch")  # doctest: +SKIP
    >>> result.metrics["val_accuracy"]                               # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BackendUnavailable,
    CheckpointError,
    CrosstrainError,
    PluginError,
    SpecError,
    TrainingError,
    UnsupportedFeature,
)

if TYPE_CHECKING:
    from . import layers, losses, metrics, optim, summary  # summary: a callable module
    from .api import build, evaluate, fit, predict
    from .batches import Batches
    from .callbacks import Callback
    from .hookspecs import hookimpl, hookspec
    from .loggers import Logger
    from .module import Module
    from .protocol import Backend, Capabilities, Program, RunEnv
    from .registry import (
        get_registry,
        register_callback,
        register_data_source,
        register_layer,
        register_logger,
        register_loss,
        register_metric,
    )
    from .spec import Spec, load_spec
    from .state import CanonicalState
    from .summary import ModelSummary
    from .trainer import FitResult

_LAZY = {
    "layers": None, "losses": None, "metrics": None, "optim": None,
    "build": "api", "evaluate": "api", "fit": "api", "predict": "api",
    "Callback": "callbacks", "hookimpl": "hookspecs", "hookspec": "hookspecs",
    "Module": "module", "Backend": "protocol", "Capabilities": "protocol",
    "Program": "protocol", "RunEnv": "protocol", "get_registry": "registry",
    "Spec": "spec", "load_spec": "spec", "CanonicalState": "state", "FitResult": "trainer",
    "Batches": "batches", "summary": None, "ModelSummary": "summary",
    "register_layer": "registry", "register_loss": "registry", "register_metric": "registry",
    "register_callback": "registry", "register_logger": "registry",
    "register_data_source": "registry", "Logger": "loggers",
}  # fmt: skip
"""Public names imported on first use, so `import crosstrain` stays cheap (numpy and pydantic
load with the first spec, not with the package)."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'crosstrain' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Batches",
    "Callback",
    "CanonicalState",
    "Capabilities",
    "CheckpointError",
    "CrosstrainError",
    "FitResult",
    "Logger",
    "Module",
    "ModelSummary",
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
    "register_callback",
    "register_data_source",
    "register_layer",
    "register_logger",
    "register_loss",
    "register_metric",
    "summary",
]
