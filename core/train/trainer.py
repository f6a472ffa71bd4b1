"""The one training loop. Backends supply compiled steps (`Program`); everything else is here:
epochs, seeded batch order, validation, metric pulls, hooks, checkpoints, interrupts."""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.checkpoint.format import clean_temporary
from crosstrain.data.arrays import ArrayData, epoch_order
from crosstrain.data.batches import (
    Batches,
    accumulation_groups,
    array_kind,
    eval_order,
)
from crosstrain.errors import Terminated, TrainingError
from crosstrain.nn.optim import schedule_length
from crosstrain.plugin.protocol import Program
from crosstrain.plugin.registry import Registry
from crosstrain.spec.schema import Spec
from crosstrain.train import resume, stateful
from crosstrain.train.hook_errors import hook_failure, notify_exception, save_before_reporting
from crosstrain.train.result import FitResult, fit_result  # FitResult: importable from here too
from crosstrain.train.run_length import RunLength, run_length
from crosstrain.train.saving import CheckpointSaver
from crosstrain.train.units import RunningMean, pass_units


class Trainer:
    """Runs a Program over data and calls the lifecycle hooks.

    Attributes read by plugins: `spec`, `program`, `backend`, `run_dir`, `checkpoint_dir`,
    `epoch`, `global_step`, `batch_in_epoch`, `steps_per_epoch`, `total_steps`, `history`,
    `tokenizer` (text data's tokenizer record or None), `samples_seen` (training rows dispatched by this process), `run_length` (`RunLength`: the
    same value the backend's lr schedule was built with), `schedule_steps` (its length in
    updates as the schedule uses it), `lr_scale` (the multiplier a metric-driven schedule set,
    `Program.set_lr_scale`), `should_stop` (set it in `on_epoch_end` to end the
    fit after the epoch, or in `on_batch_end` to stop at that step), `interrupted` (`SIGINT` or
    `SIGTERM` once a signal asked to stop at the next step boundary) and `aborted` (a second
    signal interrupted a step: the state may be half-updated and is not saved), `any_rank`
    (`program.any_rank` when several processes run the fit, else None: a flag or'ed over ranks).
    """

    def __init__(
        self,
        spec: Spec,
        program: Program,
        registry: Registry,
        backend: str,
        run_dir: Path | None,
        remote: Any = None,
    ):
        self.spec, self.program, self.registry, self.backend = spec, program, registry, backend
        self.hook = registry.pm.hook
        self.run_dir = run_dir
        self.checkpoint_dir = run_dir / "checkpoints" if run_dir else None
        self.epoch = 0
        self.global_step = 0
        self.batch_in_epoch = 0
        self.steps_per_epoch = 0
        self.total_steps = 0
        self.history: list[dict[str, float]] = []
        self.should_stop = False
        self.stopped_early = False
        self.last_checkpoint: Path | None = None
        self.versions: dict[str, str | None] = {}
        self.tokenizer: dict[str, Any] | None = None
        """The tokenizer record of text data (`crosstrain.data.tokenizers`), kept in every
        checkpoint so generation decodes with the vocabulary trained on."""
        self.interrupted: str | None = None
        self.skipped_steps = 0
        self._device_data: dict[int, Any] = {}
        self.aborted = False
        self._halt = False
        self.any_rank = program.any_rank if program.world_size > 1 else None
        self.samples_seen = 0
        self.schedule_steps: int | None = None
        self.lr_scale = 1.0
        self.run_length = RunLength(0, None)
        policy = spec.trainer.checkpoint
        self._saver = CheckpointSaver(policy is not None and policy.async_save, remote)
        self._val_data: ArrayData | Batches | None = None
        self.phase_timer: Any = None  # `trainer.profile`: times the data (plugins/profiler.py)

    # -- checkpoints ------------------------------------------------------------------------

    def trainer_info(self) -> dict[str, Any]:
        """What `trainer.json` records (`resume.loop_record`)."""
        return resume.loop_record(self)

    def save_checkpoint(self) -> Path | None:
        """Writes the current state under `checkpoint_dir`; fires `on_checkpoint(stage="save")`
        once it is committed (`crosstrain.train.saving`: at once, or on a background thread
        with `trainer.checkpoint.async`, then the path is where it will be).

        A process that writes no files (rank > 0) returns None, after taking its part in
        `get_state` when the program's state is sharded (`program.collective_state`).
        """
        return self._saver.save(self)

    def restore(self, path: Path) -> None:
        """Loads a checkpoint into the program and the loop position (`resume.restore`)."""
        resume.restore(self, path)

    # -- the loop ---------------------------------------------------------------------------

    def _pull(
        self, pending: list[Any], count: int, running: RunningMean, prefix: str
    ) -> dict[str, float]:
        values = self.program.metrics_to_host(pending)
        if (
            prefix == "train"
            and self.spec.trainer.detect_anomaly
            and not math.isfinite(values.get("loss", 0.0))
        ):
            where = f"at step {self.global_step} (epoch {self.epoch}, batch {self.batch_in_epoch})"
            kept = (
                f"; the last good checkpoint is {self.last_checkpoint}"
                if self.last_checkpoint
                else ""
            )
            raise TrainingError(
                f"the training loss became {values['loss']} {where}{kept}. Lower optimizer.lr or set optimizer.clip_norm."
            )
        running.add(values, count)
        return {f"{prefix}_{k}": v for k, v in values.items()}

    def _run_epoch(
        self,
        data: ArrayData | Batches,
        stage: str,
        order: np.ndarray | None,
        batch_size: int,
        drop_last: bool,
        start: int = 0,
        limit: int | float | None = None,
    ) -> dict[str, float]:
        step_fn = self.program.train_step if stage == "train" else self.program.eval_step
        batch_hooks = bool(self.hook.on_batch_end.get_hookimpls())
        every = self.spec.trainer.log_every_n_steps if stage == "train" else None
        skipping = stage == "train" and self.spec.trainer.on_nan == "skip"
        micro = self.spec.trainer.accumulate_grad_batches if stage == "train" else 1
        first = start * micro  # batches of this pass already run (a mid-epoch resume)
        order = stateful.begin_pass(self, data, order, stage, first)  # `trainer.stateful`
        units, total = pass_units(self, data, stage, order, batch_size, drop_last, first, limit)
        if micro > 1:  # one optimizer step per `micro` batches
            units, step_fn = accumulation_groups(units, micro), self._accumulate_step
            total = None if total is None else -(-total // micro)
        running, pending, pending_count = RunningMean(), [], 0
        index = start
        for group, count, batch in units:
            if group > 1:
                pending.append(self.program.train_steps(batch))
            else:
                output = self._skipping_step(batch) if skipping else step_fn(batch)
                if output is None:
                    count = 0
                else:
                    pending.append(output)
            pending_count += count
            index += group
            logs = None
            if stage == "train":
                self.samples_seen += count
                before, self.global_step = self.global_step, self.global_step + group
                self.batch_in_epoch = index
                if self.global_step // every > before // every or index == total:
                    logs = self._pull(pending, pending_count, running, stage)
                    logs.update(self._collect("step", logs))
                    pending, pending_count = [], 0
            if stage == "train" and self._validates_at(before, index, total):
                logs = {**(logs or {}), **self._validate(self._val_data)}
            if batch_hooks:
                self.hook.on_batch_end(trainer=self, stage=stage, batch_index=index - 1, logs=logs)
            if self._saver.pending:
                self._saver.poll(self)  # a background save ended: report it, or raise its error
            if stage == "train" and (
                self._signal_stop(logs is not None)
                or self.should_stop
                or self.global_step >= self.total_steps
            ):
                break
        if pending:
            self._pull(pending, pending_count, running, stage)
        if stage == "train" and not self.steps_per_epoch and isinstance(data, Batches):
            # counted by a first pass that ran to the end
            self._set_length(self.run_length.counted(self.spec, data.length or 0))
        return running.means(stage)

    def _validates_at(self, before: int, index: int, total: int | None) -> bool:
        """Whether `trainer.val_check_interval` validates after this step: when the step count
        crossed a multiple of it, except on a pass's last step (the epoch's own validation)."""
        interval = self.spec.trainer.val_check_interval
        return (
            interval is not None
            and self.global_step // interval > before // interval
            and index != total
            and self._val_data is not None
            and (isinstance(self._val_data, Batches) or len(self._val_data) > 0)
            and self.spec.trainer.limit_val_batches != 0
        )

    def _set_length(self, length: RunLength) -> None:
        """Batches per epoch (0: a stream's, until its first pass ends) and the run's steps."""
        self.run_length, self.steps_per_epoch = length, length.steps_per_epoch
        self.total_steps = length.total_steps or math.inf

    def _collect(self, interval: str, metrics: dict[str, float]) -> dict[str, float]:
        """What `collect_metrics` implementations add to a train pull or epoch (later win)."""
        found = self.hook.collect_metrics(
            trainer=self, stage="train", interval=interval, metrics=dict(metrics)
        )
        return {k: v for result in reversed(found) for k, v in (result or {}).items()}

    def _accumulate_step(self, batches: list[Any]) -> Any:
        """One optimizer step on several micro-batches (`trainer.accumulate_grad_batches`); a
        group of one (the end of a pass) is a plain step, which is the same update."""
        if len(batches) == 1:
            return self.program.train_step(batches[0])
        return self.program.accumulate_step(batches)

    def _skipping_step(self, batch: tuple[Any, Any]) -> Any:
        """`on_nan: skip`: one step that is undone (state restored) if its loss is not finite.

        Costs a state copy and a host sync per step; returns None for a skipped step.
        """
        before = self.program.get_state()
        output = self.program.train_step(batch)
        if math.isfinite(self.program.metrics_to_host([output]).get("loss", 0.0)):
            return output
        self.program.set_state(before)
        self.skipped_steps += 1
        return None

    def _validate(self, val: ArrayData | Batches) -> dict[str, float]:
        self.hook.on_epoch_start(trainer=self, stage="val", epoch=self.epoch)
        size = self.spec.data.eval_batch_size or self.spec.data.batch_size
        limit = self.spec.trainer.limit_val_batches
        with stateful.kept(self):  # a validation inside an epoch keeps its carried state
            metrics = self._run_epoch(val, "val", eval_order(val), size, False, limit=limit)
        self.hook.on_epoch_end(trainer=self, stage="val", epoch=self.epoch, metrics=metrics)
        return metrics

    def notify_exception(self, exc: BaseException) -> None:
        """Calls every plugin's `on_exception` once, even if one of them fails (a warning)."""
        notify_exception(self, exc)

    def _signal_stop(self, pulled: bool) -> bool:
        """Whether a signal stops the fit at this step boundary. One process stops at once;
        several ranks decide together at metric pulls (`program.any_rank`, one tiny all-reduce
        where the pull syncs anyway), so all stop after the same step and save one state."""
        if not self._halt:
            if self.any_rank is None:
                self._halt = bool(self.interrupted)
            elif pulled:
                self._halt = self.any_rank(bool(self.interrupted))
        return self._halt

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            self.aborted = True
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.interrupted = signal.Signals(signum).name

    def fit(
        self,
        train: ArrayData | Batches,
        val: ArrayData | Batches | None,
        resume_from: Path | None = None,
        length: RunLength | None = None,
    ) -> FitResult:
        """Trains until `max_epochs`/`max_steps` or `should_stop`; Ctrl-C stops at a step boundary.

        `length` is the run length the program's schedule was built with (`fit` passes it);
        by default it is computed here the same way (`crosstrain.train.run_length.run_length`).
        """
        data, self._val_data = self.spec.data, val
        self._set_length(length or run_length(self.spec, train))
        self.schedule_steps = schedule_length(self.run_length.total_steps)
        if not isinstance(train, Batches) and self.steps_per_epoch == 0:
            why = (
                f"with batch_size {data.batch_size} and drop_last: true"
                if data.drop_last
                else f"(after data.validation_split {data.validation_split})"
                if data.validation_split
                else ""
            )
            raise TrainingError(
                f"no training batch: the training set has {len(train)} samples {why}".strip()
            )
        if self.checkpoint_dir is not None:
            clean_temporary(self.checkpoint_dir)
        if resume_from is not None:
            self.restore(resume_from)
        handled = (signal.SIGINT, signal.SIGTERM)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = {s: signal.getsignal(s) for s in handled} if main_thread else {}
        for signum in previous:
            signal.signal(signum, self._on_signal)
        try:
            self.hook.on_fit_start(trainer=self)
            self._saver.in_loop = True
            self._loop(train, val)
            self._saver.in_loop = False
            self._saver.wait(self)
            if self._signal_stop(pulled=True):
                raise Terminated if self.interrupted == "SIGTERM" else KeyboardInterrupt
        except BaseException as exc:
            self._saver.in_loop = False
            self._saver.wait(self, quiet=True)  # then Ctrl-C's or a hook failure's save
            failure = hook_failure(self.registry.pm, exc)  # a plugin's hook raised: save, name it
            if failure is not None:
                save_before_reporting(self)
            self.notify_exception(failure or exc)
            if failure is not None:
                raise failure from exc
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        result = fit_result(self)
        self.hook.on_fit_end(trainer=self, result=result)
        return result

    def _loop(self, train: ArrayData | Batches, val: ArrayData | Batches | None) -> None:
        spec, data = self.spec, self.spec.data
        while (
            self.epoch < spec.trainer.max_epochs
            and self.global_step < self.total_steps
            and not self.should_stop
        ):
            resuming = not self.steps_per_epoch or self.batch_in_epoch < self.steps_per_epoch
            start = self.batch_in_epoch if resuming else 0
            self.batch_in_epoch = start
            self.hook.on_epoch_start(trainer=self, stage="train", epoch=self.epoch)
            order = None
            if not isinstance(train, Batches):
                order = epoch_order(len(train), spec.seed, self.epoch, data.shuffle)
            limit = spec.trainer.limit_train_batches
            metrics = self._run_epoch(
                train, "train", order, data.batch_size, data.drop_last, start, limit
            )
            if self._halt:
                return
            if (
                val is not None
                and (isinstance(val, Batches) or len(val))
                and spec.trainer.limit_val_batches != 0
                and (self.epoch + 1) % spec.trainer.val_every_n_epochs == 0
            ):
                metrics.update(self._validate(val))
            metrics.update(self._collect("epoch", metrics))
            self.history.append({"epoch": self.epoch, "step": self.global_step, **metrics})
            self.hook.on_epoch_end(trainer=self, stage="train", epoch=self.epoch, metrics=metrics)
            self.epoch += 1
            self.batch_in_epoch = 0
            if self.should_stop:
                self.stopped_early = self.global_step < self.total_steps

    def evaluate(self, data: ArrayData | Batches, stage: str = "test") -> dict[str, float]:
        """Loss and metrics over `data`, keyed `<stage>_<name>`."""
        size = self.spec.data.eval_batch_size or self.spec.data.batch_size
        try:
            self.hook.on_epoch_start(trainer=self, stage=stage, epoch=self.epoch)
            metrics = self._run_epoch(data, stage, eval_order(data), size, drop_last=False)
            self.hook.on_epoch_end(trainer=self, stage=stage, epoch=self.epoch, metrics=metrics)
        except BaseException as exc:
            self.notify_exception(exc)
            raise
        return metrics

    def predict(self, x: np.ndarray | Batches) -> np.ndarray:
        """Model outputs for every row of `x` (arrays, or the inputs of a stream), in order."""
        size = self.spec.data.eval_batch_size or self.spec.data.batch_size
        if isinstance(x, Batches):
            inputs = x.inputs(array_kind(self.program))
        else:
            inputs = (x[i : i + size] for i in range(0, len(x), size))
        try:
            self.hook.on_epoch_start(trainer=self, stage="predict", epoch=self.epoch)
            outputs = [self.program.predict_step((chunk, None)) for chunk in inputs]
            self.hook.on_epoch_end(trainer=self, stage="predict", epoch=self.epoch, metrics={})
        except BaseException as exc:
            self.notify_exception(exc)
            raise
        return np.concatenate(outputs) if outputs else np.zeros((0,))
