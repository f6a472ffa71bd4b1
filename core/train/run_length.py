"""How long a fit runs, computed once: the lr schedule and the trainer both read this.

Example:
    >>> RunLength.of(max_epochs=20, max_steps=None, steps_per_epoch=23)
    RunLength(steps_per_epoch=23, total_steps=460)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crosstrain.data.arrays import batch_slices


@dataclass(frozen=True)
class RunLength:
    """Optimizer steps per epoch and in the whole run.

    Attributes:
        steps_per_epoch: optimizer steps in one pass over the training data, from its batches:
            `ceil(rows / batch_size)` for arrays (`floor` with `data.drop_last`), `len()` of a
            stream that knows it, 0 for a stream of unknown length until its first pass ends;
            cut by `trainer.limit_train_batches` and divided by `accumulate_grad_batches`
            (rounded up), see `epoch_steps`.
        total_steps: `min(max_steps, max_epochs × steps_per_epoch)`; `max_steps` (or None)
            while `steps_per_epoch` is unknown. Under `ddp` every rank walks the same global
            batches, so the numbers are the same on every rank.
    """

    steps_per_epoch: int
    total_steps: int | None

    @classmethod
    def of(cls, max_epochs: int, max_steps: int | None, steps_per_epoch: int) -> RunLength:
        """The run length from the trainer's limits and the batches per epoch (0: unknown)."""
        if not steps_per_epoch:
            return cls(0, max_steps or None)
        epochs = max_epochs * steps_per_epoch
        return cls(steps_per_epoch, min(max_steps, epochs) if max_steps else epochs)

    def counted(self, spec: Any, batches: int) -> RunLength:
        """The length once a stream's first pass has counted its `batches`."""
        return RunLength.of(
            spec.trainer.max_epochs, spec.trainer.max_steps, epoch_steps(spec.trainer, batches)
        )


def limited(limit: int | float | None, batches: int | None) -> int | None:
    """Batches of a pass that `limit` (`trainer.limit_train_batches`/`limit_val_batches`)
    keeps: a count caps it, a fraction keeps `floor(batches × fraction)` but at least 1;
    None keeps all. An unknown length (None) stays unknown unless a count caps it."""
    if limit is None:
        return batches
    if isinstance(limit, float):
        return None if batches is None else min(batches, max(1, int(batches * limit)))
    return limit if batches is None else min(batches, limit)


def epoch_steps(trainer: Any, batches: int) -> int:
    """Optimizer steps in a pass of `batches` training batches (0: unknown): the batches kept
    by `limit_train_batches`, grouped by `accumulate_grad_batches` (a shorter last group is
    one more step)."""
    kept = limited(trainer.limit_train_batches, batches or None) or 0
    return -(-kept // trainer.accumulate_grad_batches)


def run_length(spec: Any, train: Any) -> RunLength:
    """The run length of fitting `spec` on `train` (core `ArrayData` after the validation split,
    or `Batches`), exactly as the trainer walks it: `batch_slices` for arrays (the last partial
    batch counts unless `drop_last`), the stream's `length` otherwise; then `epoch_steps`
    (`limit_train_batches`, `accumulate_grad_batches`): the length counts optimizer steps."""
    from crosstrain.data.batches import Batches

    if isinstance(train, Batches):
        batches = train.length or 0
    else:
        batches = len(batch_slices(len(train), spec.data.batch_size, spec.data.drop_last))
    return RunLength.of(
        spec.trainer.max_epochs, spec.trainer.max_steps, epoch_steps(spec.trainer, batches)
    )


def dev_run_spec(spec: Any) -> Any:
    """`spec` as `trainer.fast_dev_run` runs it (unchanged when it is off): 1 (or N) training
    and validation batches in one epoch, with no checkpoints, loggers, early stopping or
    mid-epoch validation (`fit` also writes no run directory), as Lightning's `fast_dev_run`."""
    wanted = spec.trainer.fast_dev_run
    if wanted is False:
        return spec
    batches = 1 if wanted is True else wanted
    trainer = spec.trainer.model_copy(
        update={
            "max_epochs": 1,
            "max_steps": None,
            "limit_train_batches": batches,
            "limit_val_batches": batches,
            "val_check_interval": None,
            "checkpoint": None,
            "loggers": [],
            "early_stopping": None,
        }
    )
    return spec.model_copy(update={"trainer": trainer})
