"""What a checkpoint records about the loop (`trainer.json`) and how a fit resumes from it:
the loop position, the history, and the state of every callback that has one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError
from .state import read_checkpoint

if TYPE_CHECKING:
    from .trainer import Trainer


def stateful_callbacks(trainer: Trainer) -> dict[str, Any]:
    """Registered callbacks whose state goes into checkpoints, by `state_key` (or class name):
    those with both `state_dict()` and `load_state_dict(state)`."""
    found = {}
    for plugin in trainer.registry.pm.get_plugins():
        if callable(getattr(plugin, "state_dict", None)) and callable(
            getattr(plugin, "load_state_dict", None)
        ):
            found[getattr(plugin, "state_key", type(plugin).__name__)] = plugin
    return found


def loop_record(trainer: Trainer) -> dict[str, Any]:
    """Where to resume (a finished epoch resumes at the next), the history, the spec, versions
    and the callbacks' states: the `trainer.json` of a checkpoint (JSON types)."""
    epoch, batch = trainer.epoch, trainer.batch_in_epoch
    if trainer.steps_per_epoch and batch >= trainer.steps_per_epoch:
        epoch, batch = epoch + 1, 0
    return {
        "epoch": epoch,
        "batch_in_epoch": batch,
        "global_step": trainer.global_step,
        "skipped_steps": trainer.skipped_steps,
        "seed": trainer.spec.seed,
        "data_order_seed": trainer.spec.seed,
        "history": trainer.history,
        "spec": trainer.spec.to_dict(),
        "backend": trainer.backend,
        "versions": trainer.versions,
        "callbacks": {key: cb.state_dict() for key, cb in stateful_callbacks(trainer).items()},
    }


def restore(trainer: Trainer, path: Path) -> None:
    """Loads a checkpoint into the trainer's program and loop position, then the callbacks'
    states; fires `on_checkpoint(stage="load")`.

    Raises:
        CheckpointError: the checkpoint is unreadable or does not fit the program's model.
    """
    state, meta = read_checkpoint(path)
    try:
        trainer.program.set_state(state)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot load into the {trainer.backend} model: {err}"
        ) from err
    trainer.epoch = int(meta.get("epoch", 0))
    trainer.batch_in_epoch = int(meta.get("batch_in_epoch", 0))
    trainer.global_step = int(meta.get("global_step", state.step))
    trainer.skipped_steps = int(meta.get("skipped_steps", 0))
    trainer.history = list(meta.get("history", []))
    stored = meta.get("callbacks", {})
    for key, callback in stateful_callbacks(trainer).items():
        if isinstance(stored.get(key), dict):
            callback.load_state_dict(stored[key])
    trainer.hook.on_checkpoint(trainer=trainer, stage="load", path=Path(path))
