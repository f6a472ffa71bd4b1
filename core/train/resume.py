"""What a checkpoint records about the loop (`trainer.json`) and how a fit resumes from it:
the loop position, the history, and the state of every callback that has one.

Before anything is built, `plan_resume` compares the spec with the one stored in the checkpoint:
a model with other parameters is refused, other changes need `resume_changed` (the CLI's
`--resume-changed`); how long the run is and how it is watched may change freely. `restore`
checks every tensor's name, shape and dtype against the model before loading it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crosstrain.checkpoint.checks import check_dtypes
from crosstrain.checkpoint.format import (
    CanonicalState,
    check_compatible,
    compatibility_problem,
    read_checkpoint,
)
from crosstrain.errors import CheckpointError

if TYPE_CHECKING:
    from crosstrain.spec.schema import Spec
    from crosstrain.train.run_length import RunLength
    from crosstrain.train.trainer import FitResult, Trainer

FREE_TO_CHANGE = (
    "backend",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.early_stopping",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.compile",
    "trainer.cudnn_benchmark",
    "trainer.steps_per_execution",
    "trainer.log_every_n_steps",
    "trainer.val_every_n_epochs",
    "trainer.progress",
    "trainer.loggers",
    "trainer.callbacks",
    "trainer.checkpoint",
    "trainer.detect_anomaly",
    "trainer.run_dir",
    "trainer.fast_dev_run",
    "trainer.limit_train_batches",
    "trainer.limit_val_batches",
    "trainer.val_check_interval",
    "trainer.deterministic",
)
"""Spec fields a resume may change without `resume_changed`: how long, where and how fast
the run goes and how it is watched, not what it computes."""
_LISTED = 8


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
    history = [
        {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in h.items()}
        for h in trainer.history
    ]  # a non-finite metric is recorded as null: trainer.json holds finite numbers only
    finished = [h for h in history if h["epoch"] < epoch]
    if epoch and (not finished or finished[-1]["step"] != trainer.global_step - batch):
        # stopped after the epoch's last step, before its record (e.g. during validation)
        history.insert(len(finished), {"epoch": epoch - 1, "step": trainer.global_step - batch})
    return {
        "epoch": epoch,
        "batch_in_epoch": batch,
        "global_step": trainer.global_step,
        "skipped_steps": trainer.skipped_steps,
        "seed": trainer.spec.seed,
        "data_order_seed": trainer.spec.seed,
        "history": history,
        "spec": trainer.spec.to_dict(),
        "backend": trainer.backend,
        "versions": trainer.versions,
        "callbacks": {key: cb.state_dict() for key, cb in stateful_callbacks(trainer).items()},
        **({"tokenizer": trainer.tokenizer} if trainer.tokenizer is not None else {}),
    }


def restore(trainer: Trainer, path: Path) -> None:
    """Loads a checkpoint into the trainer's program and loop position, then the callbacks'
    states; fires `on_checkpoint(stage="load")`.

    Raises:
        CheckpointError: the checkpoint is unreadable or does not fit the program's model.
    """
    state, meta = read_checkpoint(path)
    check_fits_model(
        state, trainer.program.get_state(), Path(path), precision_changed(meta, trainer.spec)
    )
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
            try:
                callback.load_state_dict(stored[key])
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise CheckpointError(
                    f"{path / 'trainer.json'}: callbacks.{key} is not a state {key} can load "
                    f"({type(err).__name__}: {err})"
                ) from None
    trainer.hook.on_checkpoint(trainer=trainer, stage="load", path=Path(path))
    if trainer.run_dir is not None:
        print(
            f"resumed from {path} (epoch {trainer.epoch}, step {trainer.global_step})", flush=True
        )


def precision_changed(meta: dict[str, Any], spec: Spec) -> bool:
    """Whether `spec` asks for another precision than the checkpoint's stored spec."""
    stored = meta.get("spec")
    trainer = stored.get("trainer") if isinstance(stored, dict) else None
    return isinstance(trainer, dict) and trainer.get("precision") != spec.trainer.precision


def check_fits_model(
    state: CanonicalState, expected: CanonicalState, path: Path, allow_float_cast: bool = False
) -> None:
    """Every parameter's name and shape, and every tensor's dtype, must be the model's
    (`expected`: a freshly built program's state); a float of another width is accepted only
    when the precision was changed on purpose (`allow_float_cast`).

    Raises:
        CheckpointError: naming the tensor with the checkpoint's and the model's value.
    """
    check_compatible(state, {k: v.shape for k, v in expected.params.items()}, str(path))
    check_dtypes(state.params, expected.params, path / "model.safetensors", allow_float_cast)
    check_dtypes(
        state.optimizer, expected.optimizer, path / "optimizer.safetensors", allow_float_cast
    )


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": [1]}}` → `{"a.b[0]": 1}`; an empty mapping or list is a value."""
    if isinstance(node, dict) and node:
        items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items())
    elif isinstance(node, list) and node:
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(node))
    else:
        return {prefix: node}
    found: dict[str, Any] = {}
    for key, value in items:
        found.update(_flat(value, key))
    return found


def _shown(value: Any) -> str:
    text = "(absent)" if value is _ABSENT else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_ABSENT = object()


def spec_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """`(field, stored value, current value)` for every leaf that differs, in field order."""
    old, new = _flat(stored), _flat(current)
    keys = list(new) + [k for k in old if k not in new]
    return [
        (k, old.get(k, _ABSENT), new.get(k, _ABSENT))
        for k in keys
        if old.get(k, _ABSENT) != new.get(k, _ABSENT)
    ]


def _free(key: str) -> bool:
    return any(key == f or key.startswith((f + ".", f + "[")) for f in FREE_TO_CHANGE)


def _listing(changes: list[tuple[str, Any, Any]]) -> str:
    shown = [f"{k}: {_shown(a)} -> {_shown(b)}" for k, a, b in changes[:_LISTED]]
    more = f"; and {len(changes) - _LISTED} more" if len(changes) > _LISTED else ""
    return "; ".join(shown) + more


@dataclass
class ResumePlan:
    """A checkpoint read and checked against the spec, before anything is built.

    Attributes:
        path: the checkpoint directory.
        state, meta: what `read_checkpoint` returned.
        changes: spec fields that differ from the stored spec, `(field, stored, current)`.
    """

    path: Path
    state: CanonicalState
    meta: dict[str, Any]
    changes: list[tuple[str, Any, Any]]

    @property
    def global_step(self) -> int:
        return int(self.meta.get("global_step", self.state.step))

    def check_model(self, expected: CanonicalState, spec: Spec) -> None:
        """`check_fits_model` against a freshly built program's state."""
        check_fits_model(self.state, expected, self.path, precision_changed(self.meta, spec))

    def finished(self, spec: Spec, length: RunLength) -> bool:
        """Whether the checkpoint is already at the end of the run `spec` asks for."""
        total = length.total_steps
        done_steps = total is not None and self.global_step >= total
        return done_steps or int(self.meta.get("epoch", 0)) >= spec.trainer.max_epochs

    def finished_result(self, spec: Spec) -> FitResult:
        """What `fit` returns for a run with nothing left to train (it says so on stdout)."""
        from crosstrain.train.result import FitResult
        from crosstrain.train.rundir import checkpoint_run_dir

        print(
            f"nothing to train: {self.path} is at step {self.global_step}, epoch "
            f"{self.meta.get('epoch', 0)}, and the run ends at epoch {spec.trainer.max_epochs}"
            + (f" or step {spec.trainer.max_steps}" if spec.trainer.max_steps else "")
            + " (raise trainer.max_epochs or trainer.max_steps to train on)",
            flush=True,
        )
        history = list(self.meta.get("history", []))
        last = history[-1] if history else {}
        return FitResult(
            metrics={k: v for k, v in last.items() if k not in ("epoch", "step")},
            history=history,
            state=self.state,
            native_model=None,
            program=None,
            run_dir=checkpoint_run_dir(self.path),
            last_checkpoint=self.path,
            extras={"already_finished": True, "skipped_steps": self.meta.get("skipped_steps", 0)},
        )


def plan_resume(spec: Spec, path: Path, resume_changed: bool = False) -> ResumePlan:
    """Reads the checkpoint and compares its stored spec with `spec`.

    Raises:
        CheckpointError: the checkpoint is unreadable; or its model has other parameters than
            this spec's (the message lists the model fields that differ and the first
            parameter that does not fit); or other fields differ (listed) and
            `resume_changed` is False.
    """
    state, meta = read_checkpoint(path)
    stored = meta.get("spec")
    changes = spec_changes(stored, spec.to_dict()) if isinstance(stored, dict) else []
    model_changes = [c for c in changes if c[0] == "model" or c[0].startswith("model.")]
    if model_changes and spec.model is not None:
        from crosstrain.nn.model import param_specs

        problem = compatibility_problem(
            state, {name: p.shape for name, p in param_specs(spec.model).items()}
        )
        if problem is not None:
            raise CheckpointError(
                f"{path}: was trained with a different model ({_listing(model_changes)}): {problem}"
            )
    to_confirm = [c for c in changes if not _free(c[0])]
    if to_confirm and not resume_changed:
        raise CheckpointError(
            f"{path}: this spec differs from the one the checkpoint was trained with: "
            f"{_listing(to_confirm)}; to go on with the new values pass --resume-changed "
            "(resume_changed=True in crosstrain.fit)"
        )
    return ResumePlan(Path(path), state, meta, changes)


def announce(plan: ResumePlan) -> None:
    """Prints the spec fields that changed since the checkpoint (one line each)."""
    for key, old, new in plan.changes:
        note = "" if _free(key) else " (--resume-changed)"
        print(f"resume: {key} changed {_shown(old)} -> {_shown(new)}{note}", flush=True)
