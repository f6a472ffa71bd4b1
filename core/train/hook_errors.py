"""A plugin hook that raises during a fit: which plugin and hook it was, and saving first.

A lifecycle hook (`on_batch_end`, `on_epoch_end`, `collect_metrics` ...) that raises anything
but a deliberate `CrosstrainError` is a plugin's bug, not the user's data or spec. The trainer
then saves an interrupt checkpoint, as Ctrl-C does, so the steps since the last checkpoint are
kept, and raises `PluginHookError` naming the plugin and the hook (the CLI prints one line and
exits 1, like a failed training run).
"""

from __future__ import annotations

import sys
import traceback
import warnings
from typing import Any

import pluggy
from crosstrain.errors import CrosstrainError, PluginHookError


def plugin_label(pm: pluggy.PluginManager, impl: Any) -> str:
    """The plugin's registered name; a callback object registered without one by its class."""
    name = impl.plugin_name
    if name.isdigit():  # pluggy names an object registered without a name by its id()
        return type(impl.plugin).__name__
    return name


def hook_failure(pm: pluggy.PluginManager, exc: BaseException) -> PluginHookError | None:
    """A PluginHookError for `exc` when it was raised inside a plugin's hook implementation
    (the innermost one in the traceback), else None. CrosstrainErrors and KeyboardInterrupt
    (Ctrl-C, SIGTERM) are left as they are."""
    if not isinstance(exc, Exception) or isinstance(exc, CrosstrainError):
        return None
    owners: dict[Any, tuple[str, str]] = {}
    for hook_name, caller in vars(pm.hook).items():
        if not isinstance(caller, pluggy.HookCaller):
            continue
        for impl in caller.get_hookimpls():
            code = getattr(impl.function, "__code__", None)
            if code is not None:
                owners.setdefault(code, (plugin_label(pm, impl), hook_name))
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        found = owners.get(frame.f_code, found)
    if found is None:
        return None
    return PluginHookError(found[0], found[1], exc)


def save_before_reporting(trainer: Any) -> None:
    """Writes an interrupt checkpoint after a plugin hook failed, as Ctrl-C would; says where
    on stdout. Skipped when checkpoints are off, nothing was trained since the last one, the
    state may be half-updated, or several ranks run the fit (saving is a collective that the
    other ranks, whose hooks did not fail, would not join)."""
    last = trainer.last_checkpoint
    if (
        trainer.spec.trainer.checkpoint is None
        or trainer.checkpoint_dir is None
        or trainer.any_rank is not None
        or trainer.aborted
        or trainer.global_step == 0
        or (last is not None and last.name == f"step-{trainer.global_step}")
    ):
        return
    try:
        path = trainer.save_checkpoint()
    except Exception as err:  # the failing hook may be on_checkpoint itself
        print(f"the interrupt checkpoint was not saved: {err}", file=sys.stderr)
        return
    print(f"\nstopped by a failing plugin: saved {path} (resume with --resume {path})", flush=True)


def notify_exception(trainer: Any, exc: BaseException) -> None:
    """Calls every plugin's `on_exception` once, even if one of them fails.

    A failing implementation is reported as a warning so the original exception is the one
    that propagates; a KeyboardInterrupt (a second Ctrl-C) still stops at once.
    """
    arguments = {"trainer": trainer, "exception": exc}
    for impl in reversed(trainer.hook.on_exception.get_hookimpls()):
        try:
            impl.function(*(arguments[name] for name in impl.argnames))
        except Exception as err:
            warnings.warn(
                f"crosstrain: {impl.plugin_name}.on_exception failed: {err!r}", stacklevel=3
            )
