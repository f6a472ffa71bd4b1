"""`TorchProgram`: a spec built into an `nn.Module`, an optimizer and the train/eval/predict steps.

Steps return device tensors and never sync with the host; `metrics_to_host` is the one
transfer. Losses and metrics are the shared array-API functions, called with the
`array_api_compat.torch` namespace on the model output (cross-entropy through torch's fused
kernel, `losses.native_loss`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import array_api_compat.torch as xp
import numpy as np
import torch
from crosstrain.checkpoint.format import CanonicalState
from crosstrain.checkpoint.weights import initial_params
from crosstrain.data.arrays import Inputs
from crosstrain.errors import UnsupportedFeature
from crosstrain.nn.graph import graph_inputs
from crosstrain.nn.optimizers import resolve_param_options
from crosstrain.plugin.protocol import Program, RunEnv, predict_inputs
from crosstrain.spec.resolve import metric_functions, resolve_function
from crosstrain.spec.schema import Spec
from torch import nn

from . import distributed
from . import state as state_io
from .device import (
    configure_backends,
    make_grad_scaler,
    precision_policy,
    select_device,
    step_marker,
)
from .losses import native_loss
from .model import DropoutKey, ParamRef, build_module, native_init, native_refs
from .optim import LrSchedule, clip_gradients, make_optimizer
from .recurrent import predicting
from .state import load_params, trainable, whole

StepOutput = tuple[Any, ...]
"""`(rows, loss, metric..., (grad_norm), (skipped))` per step: `rows` a Python int, the rest 0-d
device tensors, in the positions of jax's and keras's device vector. `metrics_to_host` stacks a
pull's outputs in one call (`metric_names`, or `train_names` for a train step's longer tuple);
stacking each step into a vector costs ~5% of a small model's step on CPU (benchmark task A)."""


class TorchProgram(Program):
    """A built model with its optimizer and steps on one torch device.

    Attributes:
        native_model: the `nn.Module` (channels-last input, like the spec).
        device: the `torch.device` it runs on.
        optimizer: the torch optimizer.
        refs: canonical name → tensor map, in canonical order.
        step: optimizer updates done.
        total_params: number of values in all canonical parameters (trainable or not).
        shard: this process's rank and world size under `ddp`/`fsdp` (one process otherwise);
            under `ddp` the native model is wrapped in `DistributedDataParallel` for training
            only, under `fsdp` its parameters are sharded in place (`fully_shard`).
        collective_state: True under `fsdp`: `get_state` gathers shards, so every rank must call
            it at the same point (the trainer does; only rank 0 writes the result).
        skipped_steps: updates the 16-mixed gradient scaler skipped, as of the last metric pull.
    """

    array_kind = "torch"
    """Batches may hold torch tensors (from a DataLoader); they are used without a copy."""

    def __init__(self, spec: Spec, env: RunEnv, backend: str = "torch"):
        self.spec, self.env, self.backend = spec, env, backend
        self.shard = distributed.setup(env.strategy, env.devices, env.accelerator)
        self.device = select_device(env.accelerator)
        configure_backends(spec.trainer, self.device)
        self.policy = precision_policy(env.precision, self.device)
        torch.manual_seed(env.seed)
        self.native_model, self.refs, self._input_dtype = self._build_model(spec, env)
        self._train_model = self._data_parallel(self.native_model)
        self.collective_state = self.shard.world_size > 1 and env.strategy == "fsdp"
        self.params = [ref.tensor for ref in trainable(self.refs)]
        self.total_params = sum(
            t.numel() for t in {id(r.tensor): r.tensor for r in self.refs}.values()
        )
        self.loss_fn = native_loss(resolve_function(spec.loss, "loss", "loss"))
        self.metric_fns = metric_functions(spec)
        self.slots = spec.optimizer.slot_names()
        self.optimizer, self.slot_layout = make_optimizer(
            spec.optimizer,
            list(trainable(self.refs)),
            self.device,
            resolve_param_options(spec.optimizer, spec.model),
        )
        self.schedule = LrSchedule(
            self.optimizer, spec.optimizer.lr, spec.schedule, env.total_steps
        )
        self.scaler = make_grad_scaler(self.policy, self.device)
        self._grad_norm = env.report_grad_norm
        self.step = 0
        self.skipped_steps = 0
        self._skipped = torch.zeros((), dtype=torch.float32, device=self.device)
        self._sync = step_marker(self.device)
        self._training: bool | None = None
        self._pin = self.device.type == "cuda"
        self._metric_dtype = torch.float64 if self.device.type in ("cpu", "cuda") else torch.float32
        self.metric_names = ("loss", *self.metric_fns)
        extras = ("grad_norm",) * bool(self._grad_norm) + ("skipped",) * (self.scaler is not None)
        self.train_names = (*self.metric_names, *extras)
        self._compute = (
            torch.compile(self._forward_loss) if spec.trainer.compile else self._forward_loss
        )
        self.dropout_key = (
            DropoutKey(self.native_model, spec.seed, self.rank, self.device)
            if spec.model is not None and spec.model.dropout_masks == "shared"
            else None
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
        native = spec.model.init == "native"
        if native:
            native_init(refs)
        # the seeded values (or under `init: native` only those core draws), given weights in place
        values = initial_params(spec.model, spec.seed, core_only=native)
        load_params([ref for ref in refs if ref.name in values], values)
        input_dtype = torch.int64 if spec.model.resolved_input_dtype == "int64" else dtype
        return module, refs, input_dtype

    def _data_parallel(self, module: nn.Module) -> nn.Module:
        if self.shard.world_size == 1:
            return module
        if self.env.strategy == "fsdp":
            distributed.shard_fully(module, self.device, self.shard.world_size)
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    @property
    def rank(self) -> int:
        """This process's rank in a data-parallel run (0 otherwise)."""
        return self.shard.rank

    @property
    def world_size(self) -> int:
        """Number of data-parallel processes (1 without a distributed strategy)."""
        return self.shard.world_size

    # -- data ------------------------------------------------------------------------------

    def _move(self, array: Any, dtype: torch.dtype) -> torch.Tensor:
        """A batch array (numpy, or a torch tensor from a DataLoader, used as is) on the device."""
        if isinstance(array, torch.Tensor):
            tensor = array
        else:
            array = np.asarray(array)
            if not array.flags.writeable or not array.flags.c_contiguous:
                array = np.array(array, copy=True, order="C")
            tensor = torch.from_numpy(array)
        if tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        if tensor.device == self.device:
            return tensor
        if self._pin and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=self._pin)  # pinned exactly when _pin

    @staticmethod
    def _is_integer(array: Any) -> bool:
        if isinstance(array, torch.Tensor):
            return array.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
        return np.asarray(array).dtype.kind in "iu"

    def _inputs(self, x: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if isinstance(x, Inputs):  # a graph's several inputs, each in its declared dtype
            kinds = [i.dtype for i in graph_inputs(self.spec.model).values()]
            return tuple(
                self._move(a, torch.int64 if kind == "int64" else self.policy.param_dtype)
                for a, kind in zip(x.arrays, kinds, strict=True)
            )
        dtype = self._input_dtype
        if dtype is None:
            dtype = torch.int64 if self._is_integer(x) else self.policy.param_dtype
        return self._move(x, dtype)

    def _targets(self, y: Any) -> torch.Tensor:
        return self._move(y, torch.int64 if self._is_integer(y) else self.policy.loss_dtype)

    def _local(self, batch: tuple[Any, Any]) -> tuple[torch.Tensor, torch.Tensor, float, int]:
        """This rank's rows of a global batch on the device, the loss weight that makes the
        gradient average exact, and the number of rows counted for metrics."""
        x, y = batch[0], batch[1]
        n = len(x)
        if self.shard.world_size == 1:
            return self._inputs(x), self._targets(y), 1.0, n
        rows = self.shard.rows(n)
        size = rows.stop - rows.start
        if size == 0:
            rows = slice(0, 1)
        x, y = x[rows], y[rows]
        return self._inputs(x), self._targets(y), self.shard.world_size * size / n, size

    def _mode(self, training: bool) -> None:
        if self._training is not training:
            self.native_model.train(training)
            self._training = training

    # -- steps -----------------------------------------------------------------------------

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self._train_model if self._training else self.native_model
        with self.policy.autocast(self.device):
            out = model(x)
        out = out.to(self.policy.loss_dtype)
        return self.loss_fn(xp, out, y), out

    def _outputs(
        self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor, size: int
    ) -> StepOutput:
        """The step's `(rows, loss, metric...)`, device values not synced."""
        if not self.metric_fns:
            return (size, loss.detach())
        out = out.detach()
        with torch.no_grad():
            return (size, loss.detach(), *(fn(xp, out, y) for fn in self.metric_fns.values()))

    @staticmethod
    def _merged(outputs: list[StepOutput]) -> StepOutput:
        """One output for several steps or micro-batches: rows summed, values their
        row-weighted means (on the device)."""
        total = sum(o[0] for o in outputs)
        shares = [o[0] / total for o in outputs]
        columns = zip(*(o[1:] for o in outputs), strict=True)
        return (total, *(sum(v * s for v, s in zip(c, shares, strict=True)) for c in columns))

    def _found_inf(self) -> torch.Tensor:
        """1.0 when the gradient scaler skipped the update just stepped (stays on the device)."""
        found = self.scaler._found_inf_per_device(self.optimizer).values()
        return (sum(t.to(self.device) for t in found) > 0).to(torch.float32)

    def train_step(self, batch: tuple[Any, Any]) -> StepOutput:
        """One optimizer update on `(x, y)` numpy arrays; returns device values without syncing."""
        x, y, weight, size = self._local(batch)
        self._mode(True)
        self.optimizer.zero_grad(set_to_none=True)
        if self.dropout_key is not None:
            self.dropout_key.advance()
        loss, out = self._compute(x, y)
        self._backward(loss if weight == 1.0 else loss * weight)
        return self._update(self._outputs(loss, out, y, size))

    def accumulate_step(self, batches: list[tuple[Any, Any]]) -> StepOutput:
        """One update on several micro-batches: each backward adds its gradient times its
        (global) rows, the sum is divided by all rows before clipping and the step, so the
        update equals one step on the rows joined. One output counts every row."""
        self._mode(True)
        self.optimizer.zero_grad(set_to_none=True)
        outputs, total = [], 0
        for batch in batches:
            x, y, weight, size = self._local(batch)
            rows = len(batch[0])
            if self.dropout_key is not None:
                self.dropout_key.advance()
            loss, out = self._compute(x, y)
            self._backward(loss * (weight * rows))
            outputs.append(self._outputs(loss, out, y, size))
            total += rows
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, 1.0 / total)
        return self._update(self._merged(outputs))

    def set_lr_scale(self, scale: float) -> None:
        """Multiplies the following updates' lr by `scale` (`Program.set_lr_scale`)."""
        self.schedule.scale = float(scale)

    def _backward(self, objective: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(objective).backward()
        else:
            objective.backward()

    def _update(self, outputs: StepOutput) -> StepOutput:
        """Clips, steps the optimizer (through the gradient scaler under 16-mixed) at this
        update's learning rate and appends `grad_norm`/`skipped` to the step's vector `outputs`."""
        self.schedule.apply(self.step)
        clip = self.spec.optimizer.clip_norm
        skipped = None
        if self.scaler is not None:
            if clip is not None or self._grad_norm:
                self.scaler.unscale_(self.optimizer)
            norm = clip_gradients(self.params, clip, self.device, self._grad_norm)
            self.scaler.step(self.optimizer)
            skipped = self._found_inf()
            self.scaler.update()
            self._skipped += skipped
        else:
            norm = clip_gradients(self.params, clip, self.device, self._grad_norm)
            self.optimizer.step()
        self.step += 1
        extras = (whole(norm).detach(),) if self._grad_norm and norm is not None else ()
        if skipped is not None:
            extras += (skipped,)
        outputs = outputs + extras
        if self._sync is not None:
            self._sync()
        return outputs

    def train_steps(self, batches: tuple[Any, Any]) -> StepOutput:
        """K updates from `(x, y)` stacked as `(K, batch, ...)`; one output that counts K batches.

        The updates run one after another (no fused kernel), so the backend does not declare
        `steps_per_execution`; the method exists for the Program protocol.
        """
        steps = zip(batches[0], batches[1], strict=True)
        return self._merged([self.train_step((x, y)) for x, y in steps])

    def eval_step(self, batch: tuple[Any, Any]) -> StepOutput:
        """Loss and metrics on `(x, y)` without an update, dropout off, moving statistics used."""
        x, y, _, size = self._local(batch)
        self._mode(False)
        with torch.no_grad():
            loss, out = self._compute(x, y)
        outputs = self._outputs(loss, out, y, size)
        if self._sync is not None:
            self._sync()
        return outputs

    def predict_step(self, batch: Any) -> np.ndarray:
        """Model outputs (numpy) for every row of `predict_inputs(batch)`."""
        x = predict_inputs(batch)
        self._mode(False)
        with torch.no_grad(), self.policy.autocast(self.device), predicting():
            out = self.native_model(self._inputs(x))
        if out.dtype in (torch.bfloat16, torch.float16):
            out = out.float()
        return out.cpu().numpy()

    def metrics_to_host(self, outputs: list[StepOutput]) -> dict[str, float]:
        """Means of `loss` and each metric over `outputs`, weighted by batch size, in one transfer.

        Across data-parallel ranks the sums are all-reduced first, so every rank returns the
        means over the global batches. Also refreshes `skipped_steps`.
        """
        if not outputs:
            return {}
        keys = self.train_names if len(outputs[0]) == len(self.train_names) + 1 else None
        keys = keys or self.metric_names
        dtype = self._metric_dtype
        values = torch.stack([v.reshape(()).to(dtype) for o in outputs for v in o[1:]])
        values = values.reshape(len(outputs), -1)
        weights = torch.tensor([o[0] for o in outputs], dtype=dtype, device=values.device)
        packed = torch.cat(
            [weights @ values, weights.sum().reshape(1), self._skipped.to(values.dtype).reshape(1)]
        )
        if self.shard.world_size > 1:
            packed = distributed.all_reduce_sum(packed) / torch.tensor(
                [1.0] * (len(keys) + 1) + [self.shard.world_size], dtype=values.dtype
            ).to(values.device)
        host = packed.cpu().numpy().astype(np.float64)
        self.skipped_steps = round(float(host[-1]))
        means = host[:-2] / host[-2]
        return {k: float(v) for k, v in zip(keys, means, strict=True)}

    def any_rank(self, flag: bool) -> bool:
        """`flag` or'ed over all ranks (an all-reduce: every rank calls it at the same point)."""
        if self.shard.world_size == 1:
            return flag
        flags = torch.tensor([float(flag)], dtype=torch.float32, device=self.device)
        return bool(distributed.all_reduce_sum(flags).item() > 0)

    # -- state -----------------------------------------------------------------------------

    def get_state(self) -> CanonicalState:
        """Parameters, optimizer slots, update count and torch RNG (`state.get_state`)."""
        return state_io.get_state(self)

    def state_for_write(self) -> CanonicalState:
        """The state as views of the CPU tensors, no copy (`Program.state_for_write`)."""
        return state_io.get_state(self, copy=False)

    def set_state(self, state: CanonicalState) -> None:
        """Loads a canonical state, possibly from another backend (`state.set_state`)."""
        state_io.set_state(self, state)

    def export(self, path: str | Path, format: str) -> Path:
        """Writes the module's `state_dict` as safetensors (`export.export`)."""
        from .export import export

        return export(self, Path(path), format)

    def trace(self, directory: Path) -> AbstractContextManager[Any]:
        """The framework's profiler over the block (`profile.trace`)."""
        from .profile import trace

        return trace(directory)
