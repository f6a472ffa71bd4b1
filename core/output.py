"""What crosstrain prints: stdlib `logging` under the `crosstrain` logger, and the frameworks'
own C++ log lines kept out of the way unless asked for.

The library only logs (`logging.getLogger("crosstrain")` has a NullHandler, as a library's
should); the command line decides what is shown (`configure_output`): `-q` only warnings and errors,
default informational lines too, `-v` debug lines and the frameworks' native logs.

TensorFlow (and XLA through it) writes C++ log lines straight to file descriptor 2: `oneDNN
custom operations are on`, `Could not find cuda drivers`, and on a machine without a GPU
`failed call to cuInit`. `TF_CPP_MIN_LOG_LEVEL=3` silences the ones written after absl's log
is initialised (cuInit among them); the ones written while TensorFlow's shared libraries load
come before that and ignore the variable, so `native_stderr_silenced` points descriptor 2 at
/dev/null around that import. Neither happens when the user set `TF_CPP_MIN_LOG_LEVEL`
themselves or `CROSSTRAIN_VERBOSE=1` (`crosstrain -v` sets both).

Example:
    $ crosstrain fit examples/digits_mlp.yaml --backend keras:tensorflow -q
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

LOG = logging.getLogger("crosstrain")
LOG.addHandler(logging.NullHandler())

VERBOSE_ENV = "CROSSTRAIN_VERBOSE"
"""`1`: show the frameworks' native log lines (set by `crosstrain -v`, inherited by workers)."""

TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"


def verbose() -> bool:
    """Whether native framework logs are wanted: `CROSSTRAIN_VERBOSE=1`."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_framework_logs() -> bool:
    """Sets `TF_CPP_MIN_LOG_LEVEL=3` unless the user chose a level or `-v` asked for the logs;
    True when crosstrain may silence native log lines (this call set the level, now or before).
    Call before TensorFlow is first imported."""
    if verbose():
        return False
    if os.environ.get(TF_LOG_ENV) is None:
        os.environ[TF_LOG_ENV] = "3"
        os.environ["_CROSSTRAIN_SET_TF_LOG"] = "1"
    return os.environ.get("_CROSSTRAIN_SET_TF_LOG") == "1"


@contextlib.contextmanager
def descriptor_silenced(descriptor: int) -> Iterator[None]:
    """File descriptor `descriptor` (1 or 2) points at /dev/null inside the block, so lines C++
    libraries write there vanish; Python exceptions still propagate as usual."""
    try:
        (sys.stdout if descriptor == 1 else sys.stderr).flush()
        saved = os.dup(descriptor)
    except (OSError, ValueError):  # no real descriptor (an embedding host): nothing to do
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
        yield
    finally:
        os.dup2(saved, descriptor)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Descriptor 2 silenced inside the block (C++ libraries' start-up lines), when
    `quiet_framework_logs()` allows."""
    if not quiet_framework_logs():
        yield
        return
    with descriptor_silenced(2):
        yield


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Descriptor 1 silenced inside the block unless `-v` (`CROSSTRAIN_VERBOSE=1`): for the
    lines a C++ library prints on stdout (gloo's `[Gloo] Rank r is connected ...`)."""
    if verbose():
        yield
        return
    with descriptor_silenced(1):
        yield


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        if record.levelno < logging.INFO:
            return f"debug: {message}"
        return message


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def configure_output(verbosity: int) -> None:
    """The command line's logging: info and debug lines to stdout, warnings and errors to
    stderr (`warning: ...`). `verbosity` -1 (`-q`): warnings and errors only; 0: info too;
    1 (`-v`): debug lines too, and the frameworks' native logs (`CROSSTRAIN_VERBOSE=1`)."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    for handler in [h for h in LOG.handlers if getattr(h, "_crosstrain", False)]:
        LOG.removeHandler(handler)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_Below(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(_Format())
        handler._crosstrain = True  # type: ignore[attr-defined]
        LOG.addHandler(handler)
    LOG.setLevel(level)
    LOG.propagate = False
    if verbosity > 0:
        os.environ[VERBOSE_ENV] = "1"
        os.environ.setdefault(TF_LOG_ENV, "0")
    else:
        quiet_framework_logs()
