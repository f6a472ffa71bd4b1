"""Every error crosstrain raises on purpose. The CLI prints them in one or two lines."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


class CrosstrainError(Exception):
    """Base of all deliberate crosstrain errors."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where (`model.layers[2].units`), and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(CrosstrainError):
    """A spec is invalid. Holds every issue found, not only the first."""

    def __init__(self, issues: list[SpecIssue] | SpecIssue, source: str | None = None):
        self.issues = [issues] if isinstance(issues, SpecIssue) else list(issues)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.issues)
        head = f"invalid spec{where} ({count} problem{'s' if count != 1 else ''})"
        super().__init__(head + ":\n" + "\n".join(f"  {issue}" for issue in self.issues))


class BackendUnavailable(CrosstrainError):
    """A backend's framework is not installed; says which extra to install."""

    def __init__(self, backend: str, reason: str, extra: str | None = None):
        self.backend, self.reason, self.extra = backend, reason, extra
        hint = f"; install it with: pip install 'crosstrain[{extra}]'" if extra else ""
        super().__init__(f"backend {backend!r} is not available: {reason}{hint}")


class MissingDependency(CrosstrainError):
    """An optional library a feature needs (a logger's tracker ...) cannot be imported; says
    which extra to install."""

    def __init__(self, feature: str, module: str, extra: str, reason: str = ""):
        self.feature, self.module, self.extra, self.reason = feature, module, extra, reason
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"{feature} needs the {module!r} package, which cannot be imported{why}; "
            f"install it with: pip install 'crosstrain[{extra}]'"
        )


def import_optional(module: str, feature: str, extra: str) -> ModuleType:
    """Imports an optional library, or raises MissingDependency naming the extra to install.

    Args:
        module: the import name (`mlflow`, `matplotlib.figure`).
        feature: what needs it, for the message (`logger 'mlflow'`, `FitResult.plot()`).
        extra: the crosstrain extra that installs it (`mlflow`, `notebook`).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependency(feature, module.split(".")[0], extra, str(err)) from None


class UnsupportedFeature(CrosstrainError):
    """A backend was asked for something it does not declare in its capabilities."""

    def __init__(self, backend: str, feature: str, supported: list[str] | None = None):
        self.backend, self.feature = backend, feature
        tail = f" (supported: {', '.join(supported)})" if supported else ""
        super().__init__(f"backend {backend!r} does not support {feature}{tail}")


class CheckpointError(CrosstrainError):
    """A checkpoint is missing, corrupt, foreign or does not fit the model."""


class PluginError(CrosstrainError):
    """A plugin failed to load or registered something invalid."""

    def __init__(self, plugin: str, entry_point: str, cause: str):
        self.plugin, self.entry_point, self.cause = plugin, entry_point, cause
        super().__init__(f"plugin {plugin!r} ({entry_point}) is broken: {cause}")


class DataError(CrosstrainError):
    """Data given to a fit, or a data file, cannot be used (names what and where)."""


class TrainingError(CrosstrainError):
    """Training cannot go on, e.g. the loss became NaN or infinite."""


class Terminated(KeyboardInterrupt):
    """The fit was stopped by SIGTERM (e.g. preemption); a checkpoint was written first.

    A KeyboardInterrupt, so code that handles Ctrl-C handles it too; the CLI exits 143.
    """
