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

from crosstrain.errors import (
    BackendUnavailable,
    CheckpointError,
    CrosstrainError,
    PluginError,
    SpecError,
    TrainingError,
    UnsupportedFeature,
)

if TYPE_CHECKING:
    from crosstrain.api import build, evaluate, explain, fit, generate, lr_find, predict
    from crosstrain.checkpoint.format import CanonicalState
    from crosstrain.checkpoint.pretrained import from_pretrained
    from crosstrain.data.batches import Batches
    from crosstrain.nn import layers, losses, metrics, optim, optimizers, schedules
    from crosstrain.nn.functional import Input
    from crosstrain.plugin.hookspecs import hookimpl, hookspec
    from crosstrain.plugin.protocol import Backend, Capabilities, Program, RunEnv
    from crosstrain.plugin.registry import (
        get_registry,
        register_callback,
        register_data_source,
        register_layer,
        register_logger,
        register_loss,
        register_metric,
        register_optimizer,
        register_schedule,
    )
    from crosstrain.spec.module import Module
    from crosstrain.spec.schema import Spec, load_spec
    from crosstrain.spec.summary import ModelSummary, summary
    from crosstrain.train.callbacks import Callback
    from crosstrain.train.loggers import Logger
    from crosstrain.train.trainer import FitResult
    from crosstrain.train.workers import end_worker

_LAZY = {
    "layers": "nn.layers", "losses": "nn.losses", "metrics": "nn.metrics", "optim": "nn.optim",
    "build": "api", "evaluate": "api", "explain": "api", "fit": "api", "predict": "api",
    "lr_find": "api", "generate": "api", "end_worker": "train.workers",
    "from_pretrained": "checkpoint.pretrained",
    "Callback": "train.callbacks", "hookimpl": "plugin.hookspecs", "hookspec": "plugin.hookspecs",
    "Module": "spec.module", "Input": "nn.functional", "Backend": "plugin.protocol", "Capabilities": "plugin.protocol",
    "Program": "plugin.protocol", "RunEnv": "plugin.protocol", "get_registry": "plugin.registry",
    "Spec": "spec.schema", "load_spec": "spec.schema", "CanonicalState": "checkpoint.format",
    "summary": "spec.summary", "ModelSummary": "spec.summary",
    "FitResult": "train.trainer", "Batches": "data.batches", "Logger": "train.loggers",
    "register_layer": "plugin.registry", "register_loss": "plugin.registry",
    "register_metric": "plugin.registry", "register_callback": "plugin.registry",
    "register_logger": "plugin.registry", "register_data_source": "plugin.registry",
    "register_optimizer": "plugin.registry", "optimizers": "nn.optimizers",
    "register_schedule": "plugin.registry", "schedules": "nn.schedules",
}  # fmt: skip
_SUBMODULES = {"layers", "losses", "metrics", "optim", "optimizers", "schedules"}
"""Public names imported on first use, so `import crosstrain` stays cheap (numpy and pydantic
load with the first spec, not with the package)."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'crosstrain' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    value = module if name in _SUBMODULES else getattr(module, name)
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
    "Input",
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
    "explain",
    "fit",
    "from_pretrained",
    "generate",
    "get_registry",
    "hookimpl",
    "hookspec",
    "layers",
    "end_worker",
    "load_spec",
    "lr_find",
    "losses",
    "metrics",
    "optim",
    "optimizers",
    "predict",
    "register_callback",
    "register_data_source",
    "register_layer",
    "register_logger",
    "register_loss",
    "register_metric",
    "register_optimizer",
    "register_schedule",
    "schedules",
    "summary",
]
