"""`TorchProgram`: a spec built into an `nn.Module`, an optimizer and the train/eval/predict steps.

Steps return device tensors and never sync with the host; `metrics_to_host` is the one
transfer. Losses and metrics are the shared array-API functions, called with the
`array_api_compat.torch` namespace on the model output.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import numpy as np
import torch
from crosstrain.errors import UnsupportedFeature
from crosstrain.model import init_params
from crosstrain.optim import slot_names
from crosstrain.protocol import RunEnv
from crosstrain.resolve import metric_functions, resolve_function
from crosstrain.spec import Spec
from crosstrain.state import CanonicalState, check_compatible
from torch import nn

from .device import make_grad_scaler, precision_policy, select_device
from .model import ParamRef, build_module, native_init, native_refs
from .optim import LrSchedule, clip_gradients, make_optimizer
from .state import (
    canonical_shape,
    load_params,
    load_slots,
    params_to_canonical,
    rng_state,
    set_rng_state,
    slots_to_canonical,
    trainable,
)

StepOutput = dict[str, Any]
"""`loss` and each metric as 0-d device tensors, plus `batch_size` (a Python int)."""


class TorchProgram:
    """A built model with its optimizer and steps on one torch device.

    Attributes:
        native_model: the `nn.Module` (channels-last input, like the spec).
        device: the `torch.device` it runs on.
        optimizer: the torch optimizer.
        refs: canonical name → tensor map, in canonical order.
        step: optimizer updates done.
        total_params: number of values in all canonical parameters (trainable or not).
    """

    def __init__(self, spec: Spec, env: RunEnv, backend: str = "torch"):
        self.spec, self.env, self.backend = spec, env, backend
        self.device = select_device(env.accelerator)
        self.policy = precision_policy(env.precision, self.device)
        torch.manual_seed(env.seed)
        self.native_model, self.refs, self._input_dtype = self._build_model(spec, env)
        self.params = [ref.tensor for ref in trainable(self.refs)]
        self.total_params = sum(
            t.numel() for t in {id(r.tensor): r.tensor for r in self.refs}.values()
        )
        self.loss_fn = resolve_function(spec.loss, "loss", "loss")
        self.metric_fns = metric_functions(spec)
        self.slots = slot_names(spec.optimizer)
        self.optimizer = make_optimizer(spec.optimizer, self.params, self.device)
        self.schedule = LrSchedule(
            self.optimizer, spec.optimizer.lr, spec.schedule, env.extras.get("total_steps")
        )
        self.scaler = make_grad_scaler(self.policy, self.device)
        self.step = 0
        self._training: bool | None = None
        self._pin = self.device.type == "cuda"
        self._metric_dtype = torch.float64 if self.device.type in ("cpu", "cuda") else torch.float32
        self._compute = (
            torch.compile(self._forward_loss) if spec.trainer.compile else self._forward_loss
        )

    def _build_model(
        self, spec: Spec, env: RunEnv
    ) -> tuple[nn.Module, list[ParamRef], torch.dtype | None]:
        dtype = self.policy.param_dtype
        if env.native_model is not None:
            if not isinstance(env.native_model, nn.Module):
                raise UnsupportedFeature(
                    self.backend,
                    f"native model of type {type(env.native_model).__name__}",
                    ["torch.nn.Module"],
                )
            module = env.native_model.to(device=self.device, dtype=dtype)
            return module, native_refs(module), None
        module, refs = build_module(spec.model, self.device, dtype)
        if spec.model.init == "native":
            native_init(refs)
        else:
            load_params(refs, init_params(spec.model, spec.seed))
        input_dtype = torch.int64 if spec.model.resolved_input_dtype == "int64" else dtype
        return module, refs, input_dtype

    # -- data ------------------------------------------------------------------------------

    def _move(self, array: Any, dtype: torch.dtype) -> torch.Tensor:
        array = np.asarray(array)
        if not array.flags.writeable or not array.flags.c_contiguous:
            array = np.array(array, copy=True, order="C")
        tensor = torch.from_numpy(array).to(dtype)
        if self._pin:
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def _inputs(self, x: Any) -> torch.Tensor:
        dtype = self._input_dtype
        if dtype is None:
            dtype = torch.int64 if np.asarray(x).dtype.kind in "iu" else self.policy.param_dtype
        return self._move(x, dtype)

    def _targets(self, y: Any) -> torch.Tensor:
        return self._move(
            y, torch.int64 if np.asarray(y).dtype.kind in "iu" else self.policy.loss_dtype
        )

    def _mode(self, training: bool) -> None:
        if self._training is not training:
            self.native_model.train(training)
            self._training = training

    # -- steps -----------------------------------------------------------------------------

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.policy.autocast(self.device):
            out = self.native_model(x)
        out = out.to(self.policy.loss_dtype)
        return self.loss_fn(xp, out, y), out

    @torch.no_grad()
    def _outputs(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> StepOutput:
        values: StepOutput = {"loss": loss.detach()}
        out = out.detach()
        for name, fn in self.metric_fns.items():
            values[name] = fn(xp, out, y)
        values["batch_size"] = int(out.shape[0])
        return values

    def train_step(self, batch: tuple[Any, Any]) -> StepOutput:
        """One optimizer update on `(x, y)` numpy arrays; returns device values without syncing."""
        x, y = self._inputs(batch[0]), self._targets(batch[1])
        self._mode(True)
        self.schedule.apply(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss, out = self._compute(x, y)
        clip = self.spec.optimizer.clip_norm
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip is not None:
                self.scaler.unscale_(self.optimizer)
            clip_gradients(self.params, clip, self.device)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            clip_gradients(self.params, clip, self.device)
            self.optimizer.step()
        self.step += 1
        return self._outputs(loss, out, y)

    def eval_step(self, batch: tuple[Any, Any]) -> StepOutput:
        """Loss and metrics on `(x, y)` without an update, dropout off, moving statistics used."""
        x, y = self._inputs(batch[0]), self._targets(batch[1])
        self._mode(False)
        with torch.no_grad():
            loss, out = self._compute(x, y)
        return self._outputs(loss, out, y)

    def predict_step(self, batch: Any) -> np.ndarray:
        """Model outputs for `batch[0]` (or `batch` itself when it is an array) as numpy."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        self._mode(False)
        with torch.no_grad(), self.policy.autocast(self.device):
            out = self.native_model(self._inputs(x))
        if out.dtype in (torch.bfloat16, torch.float16):
            out = out.float()
        return out.cpu().numpy()

    def metrics_to_host(self, outputs: list[StepOutput]) -> dict[str, float]:
        """Means of `loss` and each metric over `outputs`, weighted by batch size, in one transfer."""
        if not outputs:
            return {}
        keys = [k for k in outputs[0] if k != "batch_size"]
        rows = [
            torch.stack([o[k].reshape(()).to(self._metric_dtype) for k in keys]) for o in outputs
        ]
        values = torch.stack(rows).cpu().numpy().astype(np.float64)
        weights = np.array([o["batch_size"] for o in outputs], dtype=np.float64)
        means = weights @ values / weights.sum()
        return {k: float(v) for k, v in zip(keys, means, strict=True)}

    # -- state -----------------------------------------------------------------------------

    def get_state(self) -> CanonicalState:
        """Parameters, optimizer slots, update count and torch RNG, canonical and on the host."""
        return CanonicalState(
            params=params_to_canonical(self.refs),
            optimizer=slots_to_canonical(
                self.refs, self.optimizer, self.spec.optimizer.name, self.slots
            ),
            step=self.step,
            rng=rng_state(self.device),
        )

    def set_state(self, state: CanonicalState) -> None:
        """Loads a canonical state, possibly from another backend (no RNG, no optimizer slots).

        Raises:
            CheckpointError: parameter or slot names or shapes do not fit this model/optimizer.
        """
        check_compatible(state, {ref.name: canonical_shape(ref) for ref in self.refs}, self.backend)
        load_params(self.refs, state.params)
        load_slots(
            self.refs,
            self.optimizer,
            self.spec.optimizer.name,
            self.slots,
            state.optimizer,
            state.step,
            self.backend,
        )
        self.step = int(state.step)
        set_rng_state(state.rng, self.device)
