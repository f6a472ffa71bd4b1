"""KerasProgram: a spec's functional Keras model and optimizer behind compiled steps.

The engine is fixed per process: `KerasBackend.build` calls `device.use_engine` before this
module (which imports Keras) is imported. The steps are compiled the way Keras's own trainer
compiles them on that engine (`steps.py`). Loss and metrics are the shared
array-API functions, called on the engine's tensors inside the compiled step.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.checkpoint.format import CanonicalState
from crosstrain.checkpoint.weights import initial_params
from crosstrain.data.arrays import Inputs
from crosstrain.data.batches import split_micro_batches
from crosstrain.errors import CrosstrainError
from crosstrain.nn.metrics import weighted_means
from crosstrain.nn.optimizers import resolve_param_options
from crosstrain.plugin.protocol import Program, RunEnv, predict_inputs
from crosstrain.spec.resolve import metric_functions, resolve_function
from crosstrain.train.stateful import state_names

from . import state as state_io
from .device import (
    data_parallel,
    deterministic_engine,
    precision_policy,
    same_initial_draws,
    select_devices,
    use_engine,
)
from .model import build_model
from .optim import inner, make_optimizer
from .recurrent import CarriedState
from .steps import make_steps
from .xp import namespace


class KerasProgram(Program):
    """The Program of the Keras backend (see `crosstrain.plugin.protocol.Program`).

    Attributes:
        engine: `tensorflow`, `jax` or `torch`.
        backend: `keras:<engine>`.
        model: the functional `keras.Model` (read `native_model` for up-to-date weights).
        optimizer: the Keras optimizer (`SpecOptimizer`, or a `LossScaleOptimizer` around it).
        refs: canonical parameter name → Keras variable, as `ParamRef`s.
        distribution: the `keras.distribution.DataParallel` in use, or None.
    """

    def __init__(self, spec: Any, env: RunEnv, engine: str):
        if spec.model is None:
            raise CrosstrainError(
                "backend 'keras' builds models from spec.model; this spec has none"
            )
        self.spec, self.engine, self.backend = spec, engine, f"keras:{engine}"
        if spec.trainer.deterministic:
            deterministic_engine(engine, before_import=True)
        self.keras = keras = use_engine(engine)
        if spec.trainer.deterministic:
            deterministic_engine(engine, before_import=False)
        self.precision = precision_policy(env.precision)
        devices = select_devices(keras, engine, env.accelerator, env.devices)
        self.distribution = data_parallel(keras, devices)
        self._device = devices[0] if len(devices) == 1 else None
        if engine == "jax" and self.distribution is not None:
            same_initial_draws(spec.seed)
        with self._scope():
            self.model, self.refs = build_model(
                spec.model, self.precision.policy, spec.seed, self.backend
            )
            # `init: native` keeps Keras's own draws except for initialisers core draws
            initial = initial_params(spec.model, spec.seed, core_only=spec.model.init == "native")
            for ref in self.refs:
                if ref.name in initial:
                    ref.write(initial[ref.name])
            self.optimizer = make_optimizer(
                spec.optimizer,
                spec.schedule,
                env.total_steps,
                self.precision.loss_scaling,
                self.refs,
                resolve_param_options(spec.optimizer, spec.model),
            )
            self.optimizer.build(self.model.trainable_variables)
        self._loss = resolve_function(spec.loss, "loss", "loss")
        self._metrics = metric_functions(spec)
        self.metric_names = ("loss", *self._metrics)
        self._grad_norm = env.report_grad_norm
        self.train_names = (*self.metric_names, "grad_norm") if self._grad_norm else None
        self._int_dtype = np.int32 if engine == "jax" else np.int64
        with self._scope():
            self._steps = make_steps(
                engine,
                self.model,
                self.optimizer,
                self._objective,
                self.distribution,
                spec.trainer.compile,
                self._grad_norm,
            )
            self._steps.stateful = bool(state_names(spec))

    def _scope(self) -> ExitStack:
        stack = ExitStack()
        if self.distribution is not None:
            stack.enter_context(self.distribution.scope())
        if self._device is not None:
            stack.enter_context(self.keras.device(self._device))
        return stack

    def _objective(self, out: Any, y: Any) -> tuple[Any, Any]:
        """Loss and the report vector `[rows, loss, *metrics]` from model outputs (traced)."""
        ops = self.keras.ops
        out = ops.cast(out, "float32")
        xp = namespace(out)
        loss = self._loss(xp, out, y)
        values = [loss, *(fn(xp, out, y) for fn in self._metrics.values())]
        rows = ops.cast(ops.shape(out)[0], "float32")
        return loss, ops.stack([rows, *(ops.cast(v, "float32") for v in values)])

    def _host(self, array: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        if isinstance(array, Inputs):  # a graph's several inputs, in input order
            return tuple(self._host(part) for part in array.arrays)
        array = np.asarray(array)
        if array.dtype.kind in "iu" and array.dtype != self._int_dtype:
            return array.astype(self._int_dtype)
        if array.dtype == np.float64:
            return array.astype(np.float32)
        return array

    # -- steps -----------------------------------------------------------------------------

    def train_step(self, batch: tuple[Any, Any]) -> Any:
        """One optimizer step; returns the device vector `[rows, loss, *metrics]`."""
        with self._scope():
            return self._steps.train(self._host(batch[0]), self._host(batch[1]))

    def train_steps(self, batches: tuple[Any, Any]) -> Any:
        """K steps in one compiled call: `(x, y)` stacked with a leading axis of K."""
        with self._scope():
            return self._steps.train_many(self._host(batches[0]), self._host(batches[1]))

    def accumulate_step(self, batches: list[tuple[Any, Any]]) -> Any:
        """One update from several micro-batches in one compiled call: the equal-sized ones
        stacked (scanned on jax, an unrolled graph on tensorflow, eager on torch), a shorter
        last one after them; gradients weighted by rows."""
        equal, tail = split_micro_batches(batches)
        xs = np.stack([self._host(b[0]) for b in equal])
        ys = np.stack([self._host(b[1]) for b in equal])
        if tail is not None:
            tail = (self._host(tail[0]), self._host(tail[1]))
        with self._scope():
            return self._steps.accumulate(xs, ys, tail)

    def eval_step(self, batch: tuple[Any, Any]) -> Any:
        """Loss and metrics on a batch, without an update or dropout."""
        with self._scope():
            return self._steps.evaluate(self._host(batch[0]), self._host(batch[1]))

    def predict_step(self, batch: tuple[Any, Any]) -> np.ndarray:
        """Model outputs (float32 numpy) for every row of `predict_inputs(batch)`."""
        CarriedState.predicting = True  # a prediction is stateless (`trainer.stateful`)
        try:
            with self._scope():
                return self._steps.predict(self._host(predict_inputs(batch)))
        finally:
            CarriedState.predicting = False

    def metrics_to_host(self, outputs: list[Any]) -> dict[str, float]:
        """Means of loss and metrics over the outputs, weighted by rows: one transfer in all."""
        if not outputs:
            return {}
        return weighted_means(self._steps.to_host(outputs), self.metric_names, self.train_names)

    # -- state -----------------------------------------------------------------------------

    def get_state(self) -> CanonicalState:
        """Parameters, optimizer slots, step and seed states in canonical form (numpy copies),
        read from the compiled state without assigning the Keras variables (an assignment under
        a multi-process distribution is a collective that one process cannot run alone)."""
        return state_io.get_state(self, self._steps.host_values())

    def set_state(self, state: CanonicalState) -> None:
        """Loads a canonical state, possibly written by another backend."""
        self._steps.sync_out()
        with self._scope():
            state_io.set_state(self, state)
        self._steps.sync_in()

    def set_lr_scale(self, scale: float) -> None:
        """Multiplies the following updates' lr by `scale` (`Program.set_lr_scale`): an
        optimizer variable, so the compiled steps stay as they are."""
        self._steps.sync_out()
        with self._scope():
            inner(self.optimizer).lr_scale.assign(float(scale))
        self._steps.sync_in()

    def export(self, path: str | Path, format: str = "keras") -> Path:
        """Writes the current weights as a native `.keras` file (`export.export`)."""
        from .export import export

        return export(self, Path(path), format)

    def trace(self, directory: Path) -> AbstractContextManager[Any]:
        """The framework's profiler over the block (`profile.trace`)."""
        from .profile import trace

        return trace(directory)

    @property
    def native_model(self) -> Any:
        """The `keras.Model`, its variables holding the current weights."""
        self._steps.sync_out()
        return self.model
