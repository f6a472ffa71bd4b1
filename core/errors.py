"""Every error crosstrain raises on purpose. The CLI prints them in one or two lines."""

from __future__ import annotations

import difflib
import importlib
import reprlib
from dataclasses import dataclass
from types import ModuleType

WORKER_ERROR_DIR_ENV = "CROSSTRAIN_WORKER_ERROR_DIR"
"""Set by a launcher of several workers (`crosstrain fit --devices N` on torch): a worker's
command line writes its one-line error into `<dir>/rank-<RANK>.txt` instead of printing it, and
the launcher prints each distinct message once (every rank usually finds the same problem)."""

SHOWN_CHARS = 200
"""The most characters of a value an error message quotes (`shown`)."""
MAX_ISSUES_SHOWN = 20
"""A SpecError lists at most this many issues, then says how many more there were."""
MAX_ISSUE_CHARS = 1000
"""One issue's message is cut to this many characters."""

_BOUNDED = reprlib.Repr()
_BOUNDED.maxlevel, _BOUNDED.maxlist, _BOUNDED.maxtuple, _BOUNDED.maxdict = 3, 8, 8, 6
_BOUNDED.maxstring = _BOUNDED.maxother = SHOWN_CHARS


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """`repr(value)` for an error message, never longer than about `limit` characters.

    Containers are written with `reprlib` (nested and long ones elided with `...`), so a huge or
    alias-expanded value is never formatted whole; a cut ends with `… (N chars)` for a string
    and `… (N items)` for a container.
    """
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}… ({len(value)} chars)"
    text = _BOUNDED.repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} items)" if isinstance(value, (list, tuple, dict, set)) else ""
    return f"{text[:limit]}…{size}"


class CrosstrainError(Exception):
    """Base of all deliberate crosstrain errors."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where (`model.layers[2].units`), and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        message = self.message
        if len(message) > MAX_ISSUE_CHARS:
            message = f"{message[:MAX_ISSUE_CHARS]}… ({len(message)} chars)"
        path = self.path if len(self.path) <= SHOWN_CHARS else f"{self.path[:SHOWN_CHARS]}…"
        return f"{path}: {message}" if path else message


class SpecError(CrosstrainError):
    """A spec is invalid. Holds every issue found, not only the first."""

    def __init__(self, issues: list[SpecIssue] | SpecIssue, source: str | None = None):
        self.issues = [issues] if isinstance(issues, SpecIssue) else list(issues)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.issues)
        head = f"invalid spec{where} ({count} problem{'s' if count != 1 else ''})"
        lines = [f"  {issue}" for issue in self.issues[:MAX_ISSUES_SHOWN]]
        if count > MAX_ISSUES_SHOWN:
            lines.append(f"  ... and {count - MAX_ISSUES_SHOWN} more")
        super().__init__(head + ":\n" + "\n".join(lines))


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


class PluginHookError(TrainingError):
    """A plugin's lifecycle hook (a callback's `on_batch_end` ...) raised during a fit; the fit
    stopped after saving an interrupt checkpoint (when checkpoints are on). The CLI exits 1."""

    def __init__(self, plugin: str, hook: str, cause: BaseException):
        self.plugin, self.hook, self.cause = plugin, hook, cause
        text = " ".join(str(cause).split()) or "(no message)"
        if len(text) > MAX_ISSUE_CHARS:
            text = f"{text[:MAX_ISSUE_CHARS]}… ({len(text)} chars)"
        super().__init__(f"plugin {plugin} hook {hook}: {type(cause).__name__}: {text}")


def suggest(word: str, choices: list[str] | set[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or an empty string."""
    if len(str(word)) > 100:  # no sensible suggestion, and difflib is quadratic in the length
        return ""
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
