"""`NumpyProgram`: the Program protocol in numpy — steps, host metrics, canonical state.

Parameters are initialised by core (`crosstrain.nn.model.init_params`), so a numpy run starts
from the same weights as every other backend; losses and metrics are core's array-API
functions called with numpy; updates are `crosstrain.nn.optim.reference_step`, the definition
every backend matches. Only the backward pass is this backend's own (`layers.py`).
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp
import numpy as np
from crosstrain.checkpoint.format import CanonicalState, check_compatible
from crosstrain.nn.model import init_params, param_specs, plan
from crosstrain.nn.optim import reference_step, schedule_length, slot_names
from crosstrain.nn.optimizers import resolve_param_options
from crosstrain.plugin.protocol import Program, RunEnv, predict_inputs
from crosstrain.spec.resolve import metric_functions, resolve_function
from crosstrain.spec.schema import Spec

from .layers import loss_gradient, make_layer

StepOutput = dict[str, Any]
"""`loss` and each metric as Python floats, plus `batch_size`."""


class NumpyProgram(Program):
    """A spec's model, optimizer and steps in numpy.

    Attributes:
        native_model: the parameters, canonical name → float32 array (numpy has no modules).
        step: optimizer updates done.
    """

    def __init__(self, spec: Spec, env: RunEnv, backend: str = "numpy"):
        self.spec, self.backend = spec, backend
        self.layers = [make_layer(node.name, node.layer) for node in plan(spec.model)]
        self.params = init_params(spec.model, spec.seed)
        self.shapes = {name: p.shape for name, p in param_specs(spec.model).items()}
        self.native_model = self.params
        self.loss_fn = resolve_function(spec.loss, "loss", "loss")
        self.metric_fns = metric_functions(spec)
        self.slots: dict[str, dict[str, np.ndarray]] = {}
        self.step = 0
        self.total_steps = schedule_length(env.total_steps)

    def _forward(self, x: Any, training: bool) -> np.ndarray:
        out = np.asarray(x, dtype=np.float32)
        for layer in self.layers:
            out = layer.forward(self.params, out, training)
        return out

    def _outputs(self, out: np.ndarray, y: Any) -> StepOutput:
        values: StepOutput = {"loss": float(self.loss_fn(xp, out, y))}
        for name, fn in self.metric_fns.items():
            values[name] = float(fn(xp, out, y))
        values["batch_size"] = int(out.shape[0])
        return values

    def train_step(self, batch: tuple[Any, Any]) -> StepOutput:
        """Forward, hand-written backward and one update on `(x, y)`."""
        x, y = batch
        y = np.asarray(y)
        out = self._forward(x, training=True)
        values = self._outputs(out, y)
        grad = loss_gradient(self.spec.loss.name, self.spec.loss.options, out, y)
        grads: dict[str, np.ndarray] = {}
        for layer in reversed(self.layers):
            grad = layer.backward(self.params, grad, grads)
        opt, schedule = self.spec.optimizer, self.spec.schedule
        lr = opt.lr * (schedule.factor(self.step, self.total_steps) if schedule else 1.0)
        groups = resolve_param_options(opt, self.spec.model)  # optimizer.param_groups
        updated, self.slots = reference_step(
            opt, self.params, grads, self.slots, self.step, lr, overrides=groups
        )
        self.params.update(updated)
        self.step += 1
        return values

    def train_steps(self, batches: tuple[Any, Any]) -> StepOutput:
        """K updates in a row (not declared as `steps_per_execution`; here for the protocol)."""
        outputs = [self.train_step(b) for b in zip(batches[0], batches[1], strict=True)]
        return self._merge(outputs)

    def eval_step(self, batch: tuple[Any, Any]) -> StepOutput:
        """Loss and metrics without an update."""
        return self._outputs(self._forward(batch[0], training=False), np.asarray(batch[1]))

    def predict_step(self, batch: Any) -> np.ndarray:
        """Model outputs for every row of `predict_inputs(batch)` (an `(x, ...)` batch or x)."""
        x = predict_inputs(batch)
        return self._forward(x, training=False)

    @staticmethod
    def _merge(outputs: list[StepOutput]) -> StepOutput:
        merged = NumpyProgram.means(outputs)
        merged["batch_size"] = sum(o["batch_size"] for o in outputs)
        return merged

    @staticmethod
    def means(outputs: list[StepOutput]) -> dict[str, float]:
        weights = np.array([o["batch_size"] for o in outputs], dtype=np.float64)
        keys = [k for k in outputs[0] if k != "batch_size"]
        return {k: float(np.dot(weights, [o[k] for o in outputs]) / weights.sum()) for k in keys}

    def metrics_to_host(self, outputs: list[StepOutput]) -> dict[str, float]:
        """Means over the outputs weighted by batch size (already on the host)."""
        return self.means(outputs) if outputs else {}

    def get_state(self) -> CanonicalState:
        """Parameters, `<slot>/<layer>/<param>` slots and the step, as copies."""
        optimizer = {
            f"{slot}/{name}": value.copy()
            for slot, values in self.slots.items()
            for name, value in values.items()
        }
        params = {name: value.copy() for name, value in self.params.items()}
        return CanonicalState(params, optimizer, self.step, {})

    def set_state(self, state: CanonicalState) -> None:
        """Loads a canonical state, possibly written by another backend."""
        check_compatible(state, self.shapes, self.backend)
        self.params = {k: np.asarray(v, np.float32).copy() for k, v in state.params.items()}
        self.native_model = self.params
        self.slots = {}
        for slot in slot_names(self.spec.optimizer):
            prefix = f"{slot}/"
            values = {
                k[len(prefix) :]: np.asarray(v, np.float32).copy()
                for k, v in state.optimizer.items()
                if k.startswith(prefix)
            }
            if values:
                self.slots[slot] = values
        self.step = int(state.step)
