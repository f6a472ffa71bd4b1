"""JaxProgram: a spec's nnx model and optimizer rule behind plain `jax.jit` steps.

The nnx model is split once into `(graphdef, params, rest)`; every step is one `jax.jit` of a
pure function over a carry of plain dicts (see `state.py`) with the carry donated, so the
per-step Python cost is one flatten of builtin containers and one dispatch (a default
`nnx.jit` re-splits the module graph on every call); `jit.py` builds and caches those jits
(`CompiledSteps`). Inside the trace, `nnx.merge` rebuilds the module from the graphdef and the
canonical-name dicts. Numpy batches go straight into the jitted call; each step returns one
small float32 vector `[rows, loss, *metrics]` that stays on the device until `metrics_to_host`
concatenates the pending ones in one compiled call and fetches them with one `device_get`.
`train_steps` runs K steps in one `lax.scan`.

`cache_data` puts a whole data set on the devices once (`data.device_cache`); batches are then
`(DeviceData, rows)` and the rows are gathered inside the compiled step.

Randomness: the key of step `s` is `fold_in(key(seed), s)` and each Dropout folds in its own
index, so a rerun with the same seed is bit-identical and a resumed run continues the stream.
With `model.dropout_masks: shared` the carry also counts training forwards (`calls`) and the
key of a forward is `crosstrain.nn.dropout.call_key(seed, calls)`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import array_api_compat
import jax
import jax.numpy as jnp
import numpy as np
import optax
from crosstrain.checkpoint.format import CanonicalState
from crosstrain.checkpoint.weights import initial_params
from crosstrain.data.arrays import Inputs
from crosstrain.data.batches import split_micro_batches
from crosstrain.errors import CrosstrainError
from crosstrain.nn.dropout import call_key
from crosstrain.nn.metrics import weighted_means
from crosstrain.nn.model import frozen_params
from crosstrain.nn.optimizers import resolve_param_options
from crosstrain.plugin.protocol import Program, predict_inputs
from crosstrain.spec.resolve import metric_functions, resolve_function
from crosstrain.train.stateful import state_names
from flax import nnx

from . import state as state_io
from .device import Placement, deterministic_xla, precision_policy, select_devices
from .jit import CompiledSteps
from .model import Model, flat_names, nest, unnest
from .optim import make_optimizer
from .state import native_initial_values, seed_key_data


def _stack(arrays: list[Any]) -> Any:
    """Equal-sized batch arrays (numpy, or jax from a stream) stacked on a new leading axis."""
    return np.stack(arrays) if all(isinstance(a, np.ndarray) for a in arrays) else jnp.stack(arrays)


@dataclass(frozen=True)
class DeviceData:
    """A data set placed on the devices once (`JaxProgram.cache_data`); batches are row indices."""

    x: Any
    y: Any


class JaxProgram(Program):
    """The Program of the JAX backend (see `crosstrain.plugin.protocol.Program`).

    Attributes:
        spec: the spec it was built from.
        tx: the optimizer (`optim.JaxOptimizer`: core's rule in the jitted step).
        slots: the optimizer's canonical slot names.
        placement: devices and shardings.
        carry: the training state pytree on the devices (`state.py` describes it).
    """

    array_kind = "jax"
    """Batches may hold jax arrays (torch tensors arrive through DLPack, without a copy)."""

    def __init__(self, spec: Any, env: Any):
        if spec.model is None:
            raise CrosstrainError("backend 'jax' builds models from spec.model; this spec has none")
        self.spec = spec
        if spec.trainer.deterministic:
            deterministic_xla()
        self.policy = precision_policy(env.precision)
        self.placement = Placement(select_devices(env.accelerator, env.devices))
        with jax.default_device(self.placement.local_device):
            if spec.model.init == "native":
                model = Model(spec.model, native_initial_values(spec.model, spec.seed))
            else:
                model = Model(spec.model, initial_params(spec.model, spec.seed))
        self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        self._param_paths, self._rest_paths = flat_names(params), flat_names(rest)
        self._param_names = {p: n for n, p in self._param_paths.items()}
        self._rest_names = {p: n for n, p in self._rest_paths.items()}
        self._frozen = frozen_params(spec.model)
        self._carried = frozenset(state_names(spec))
        self._stateful = bool(self._carried)
        self._uses_rng = model.uses_rng
        self.tx = make_optimizer(
            spec.optimizer,
            spec.schedule,
            env.total_steps,
            resolve_param_options(spec.optimizer, spec.model),
        )
        self.slots = spec.optimizer.slot_names()
        self._loss = resolve_function(spec.loss, "loss", "loss")
        self._metrics = metric_functions(spec)
        self.metric_names = ("loss", *self._metrics)
        self._grad_norm = env.report_grad_norm
        self.train_names = (*self.metric_names, "grad_norm") if self._grad_norm else None
        host_params = unnest(nnx.to_pure_dict(params), self._param_names)
        host = {
            "params": host_params,
            "rest": unnest(nnx.to_pure_dict(rest), self._rest_names),
            "opt": self.tx.init(host_params),
            "step": np.int32(0),
            "key": seed_key_data(spec.seed),
        }
        self._shared_masks = spec.model.dropout_masks == "shared"
        if self._shared_masks:
            host["calls"] = np.int32(0)
        self.carry = self.placement.put_state(host)
        bodies = {
            "train": self._train_body,
            "scan": self._scan_body,
            "accumulate": self._accumulate_body,
            "eval": self._eval_body,
            "predict": self.predict_function,
        }
        self._compiled = CompiledSteps(bodies, self.placement, self.policy.matmul_precision)
        self._gather = jax.jit(
            lambda *outs: jnp.concatenate([o.reshape(-1, o.shape[-1]) for o in outs])
        )

    # -- the pure functions that get traced ------------------------------------------------

    def _apply(
        self, params: dict[str, Any], rest: dict[str, Any], x: Any, train: bool, key: Any
    ) -> tuple[Any, dict[str, Any]]:
        dtype = self.policy.compute_dtype
        given = rest
        if dtype != jnp.float32:
            params = {n: p.astype(dtype) for n, p in params.items()}
            # frozen parameters compute like the others; their stored values stay float32
            given = {n: r.astype(dtype) if n in self._frozen else r for n, r in rest.items()}
            x = jax.tree.map(  # a graph's several inputs are a tuple
                lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, x
            )
        model = nnx.merge(
            self.graphdef, nest(params, self._param_paths), nest(given, self._rest_paths)
        )
        out = model(x, train=train, key=key)
        new_rest = (  # frozen parameters (`trainable: false`) are rest too, and kept as they are
            {**rest, **unnest(nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), self._rest_names)}
            if train or self._stateful
            else rest
        )
        return out.astype(jnp.float32), new_rest

    def _report(self, loss: Any, out: Any, y: Any) -> Any:
        xp = array_api_compat.array_namespace(out)
        values = [loss, *(fn(xp, out, y) for fn in self._metrics.values())]
        return jnp.stack(
            [jnp.asarray(out.shape[0], jnp.float32), *(jnp.asarray(v, jnp.float32) for v in values)]
        )

    def _step_key(self, carry: dict[str, Any], micro: Any = None) -> Any:
        """The dropout key of a step's forward (`micro`: its index among accumulated ones)."""
        if not self._uses_rng:
            return None
        if self._shared_masks:
            calls = carry["calls"] if micro is None else carry["calls"] + micro
            return call_key(jnp, self.spec.seed, calls)
        key = jax.random.fold_in(jax.random.wrap_key_data(carry["key"]), carry["step"])
        return key if micro is None else jax.random.fold_in(key, micro)

    def _grads(
        self, carry: dict[str, Any], rest: dict[str, Any], x: Any, y: Any, key: Any
    ) -> tuple[Any, dict[str, Any], Any]:
        """Gradients of the batch's mean loss, the updated statistics and the report."""

        def objective(params: dict[str, Any]) -> tuple[Any, tuple[Any, dict[str, Any]]]:
            out, new_rest = self._apply(params, rest, x, True, key)
            return self._loss(array_api_compat.array_namespace(out), out, y), (out, new_rest)

        (loss, (out, new_rest)), grads = jax.value_and_grad(objective, has_aux=True)(
            carry["params"]
        )
        return grads, new_rest, self._report(loss, out, y)

    def _update(
        self, carry: dict[str, Any], grads: Any, rest: dict[str, Any], forwards: int = 1
    ) -> dict[str, Any]:
        params, opt = self.tx.update(grads, carry["opt"], carry["params"], carry["step"])
        new = {**carry, "params": params, "rest": rest, "opt": opt, "step": carry["step"] + 1}
        if self._shared_masks:
            new["calls"] = carry["calls"] + forwards
        return new

    def set_lr_scale(self, scale: float) -> None:
        """Multiplies the following updates' lr by `scale` (`Program.set_lr_scale`): one
        scalar of the carry, so the compiled steps stay as they are."""
        value = self.placement.put_state(np.float32(scale))
        self.carry = {**self.carry, "opt": {**self.carry["opt"], "lr_scale": value}}

    def _train_body(self, carry: dict[str, Any], x: Any, y: Any) -> tuple[dict[str, Any], Any]:
        grads, rest, report = self._grads(carry, carry["rest"], x, y, self._step_key(carry))
        if self._grad_norm:  # the norm before clipping; XLA shares it with the clip's own norm
            report = jnp.append(report, optax.tree.norm(grads).astype(jnp.float32))
        return self._update(carry, grads, rest), report

    def _accumulate_body(
        self, carry: dict[str, Any], xs: Any, ys: Any, tail: Any
    ) -> tuple[dict[str, Any], Any]:
        """One update from micro-batches stacked `(k, B, ...)` (a `lax.scan`) plus an optional
        shorter `tail` batch: the gradients summed times their rows, divided by all rows."""

        def micro(state: Any, batch: Any) -> tuple[Any, Any]:
            total, rest, index = state
            x, y = batch
            grads, rest, report = self._grads(carry, rest, x, y, self._step_key(carry, index))
            total = jax.tree.map(lambda t, g: t + g * x.shape[0], total, grads)
            return (total, rest, index + 1), report

        zeros = jax.tree.map(jnp.zeros_like, carry["params"])
        state, reports = jax.lax.scan(micro, (zeros, carry["rest"], 0), (xs, ys))
        count = xs.shape[0] * xs.shape[1]
        if tail is not None:
            state, report = micro(state, tail)
            reports = jnp.concatenate([reports, report[None]])
            count += tail[0].shape[0]
        total, rest, _ = state
        grads = jax.tree.map(lambda t: t / count, total)
        if self._grad_norm:
            norm = optax.tree.norm(grads).astype(jnp.float32)
            reports = jnp.concatenate([reports, jnp.full((reports.shape[0], 1), norm)], axis=1)
        return self._update(carry, grads, rest, reports.shape[0]), reports

    def _scan_body(self, carry: dict[str, Any], xs: Any, ys: Any) -> tuple[dict[str, Any], Any]:
        return jax.lax.scan(lambda c, batch: self._train_body(c, *batch), carry, (xs, ys))

    def _eval_body(self, params: dict[str, Any], rest: dict[str, Any], x: Any, y: Any) -> Any:
        out, new_rest = self._apply(params, rest, x, False, None)
        report = self._report(self._loss(array_api_compat.array_namespace(out), out, y), out, y)
        return (report, new_rest) if self._stateful else report  # `trainer.stateful`

    def predict_function(self, params: dict[str, Any], rest: dict[str, Any], x: Any) -> Any:
        """The pure inference forward that `predict_step` jits (and `export.py` exports); a
        stateful model's carried states read as zeros (a prediction is stateless)."""
        rest = {n: jnp.zeros_like(v) if n in self._carried else v for n, v in rest.items()}
        return self._apply(params, rest, x, False, None)[0]

    # -- compiled entry points -------------------------------------------------------------

    def _call(self, kind: str, state: tuple[Any, ...], batch: tuple[Any, Any]) -> Any:
        first, second = batch
        place = self._compiled.global_batch
        if isinstance(first, Inputs):  # a graph's several inputs: a tuple pytree
            rows = first.arrays[0].shape[1 if kind == "scan" else 0]
            fn, sharding = self._compiled.step(kind, rows)
            placed = tuple(place(a, sharding) for a in first.arrays)
            return fn(*state, placed, place(second, sharding))
        if isinstance(first, DeviceData):
            rows = np.asarray(second, np.int32)
            fn, sharding = self._compiled.step(kind, rows.shape[-1], cached=True)
            return fn(*state, first.x, first.y, place(rows, sharding))
        fn, sharding = self._compiled.step(kind, first.shape[1 if kind == "scan" else 0])
        return fn(*state, place(first, sharding), place(second, sharding))

    def train_step(self, batch: tuple[Any, Any]) -> Any:
        """One optimizer step; returns the device vector `[rows, loss, *metrics]`.

        `batch` is `(x, y)` numpy arrays, or `(DeviceData, rows)` from `cache_data`.
        """
        self.carry, report = self._call("train", (self.carry,), batch)
        return report

    def train_steps(self, batches: tuple[Any, Any]) -> Any:
        """K steps in one compiled `lax.scan`: `(x, y)` with a leading axis of K, or
        `(DeviceData, rows)` with rows of shape `(K, batch)`."""
        self.carry, reports = self._call("scan", (self.carry,), batches)
        return reports

    def accumulate_step(self, batches: list[tuple[Any, Any]]) -> Any:
        """One update from several micro-batches in one compiled call (`_accumulate_body`):
        the equal-sized ones stacked and scanned, a shorter last one after them."""
        equal, tail = split_micro_batches(batches)
        cached = isinstance(equal[0][0], DeviceData)
        fn, put = self._compiled.accumulate(cached), self._compiled.put
        if cached:
            stack = np.stack([np.asarray(rows, np.int32) for _, rows in equal])
            last = None if tail is None else np.asarray(tail[1], np.int32)
            data = (equal[0][0].x, equal[0][0].y, put(stack, True), put(last))
        else:
            xs = put(_stack([b[0] for b in equal]), True)
            ys = put(_stack([b[1] for b in equal]), True)
            last = None if tail is None else (put(tail[0]), put(tail[1]))
            data = (xs, ys, last)
        self.carry, reports = fn(self.carry, *data)
        return reports

    def eval_step(self, batch: tuple[Any, Any]) -> Any:
        """Loss and metrics on a batch without an update or dropout (a stateful model's
        recurrent states advance)."""
        report = self._call("eval", (self.carry["params"], self.carry["rest"]), batch)
        if self._stateful:
            report, rest = report
            self.carry = {**self.carry, "rest": rest}
        return report

    def predict_step(self, batch: tuple[Any, Any]) -> np.ndarray:
        """Model outputs (float32 numpy) for every row of `predict_inputs(batch)`."""
        x = predict_inputs(batch)
        fn, sharding = self._compiled.step("predict", len(x))
        if isinstance(x, Inputs):
            x = tuple(self._compiled.global_batch(a, sharding) for a in x.arrays)
        else:
            x = self._compiled.global_batch(x, sharding)
        out = fn(self.carry["params"], self.carry["rest"], x)
        return np.asarray(jax.device_get(out))

    def cache_data(self, x: np.ndarray, y: np.ndarray) -> DeviceData | None:
        """Puts a whole data set on the devices once, as `data.device_cache` asks.

        `off` never caches; `on` always; `auto` when it takes at most a quarter of the first
        device's memory (1 GiB where JAX reports none, as on CPU). Returns the handle to pass as
        `(handle, rows)` batches, or None when the data stays on the host.
        """
        mode = self.spec.data.device_cache
        if mode == "off" or self.placement.multi_process:
            return None
        if mode == "auto":
            stats = self.placement.devices[0].memory_stats() or {}
            budget = stats.get("bytes_limit", 4 << 30) // 4
            if x.nbytes + y.nbytes > budget:
                return None
        put = self.placement.put_state
        return DeviceData(put(x), put(y))

    def metrics_to_host(self, outputs: list[Any]) -> dict[str, float]:
        """Means of loss and metrics over the outputs, weighted by rows: one transfer in all."""
        if not outputs:
            return {}
        reports = jax.device_get(self._gather(*outputs))
        return weighted_means(reports, self.metric_names, self.train_names)

    # -- state -----------------------------------------------------------------------------

    def get_state(self) -> CanonicalState:
        """Parameters, optimizer slots, step and PRNG key in canonical form (numpy copies)."""
        return state_io.get_state(self)

    def zero_params(self, names: list[str]) -> None:
        """Zeros non-trainable parameters on the device (`trainer.stateful`'s reset: a
        `set_state` would hand the steps arrays they recompile for)."""
        rest = self.carry["rest"]
        self.carry = {**self.carry, "rest": {**rest, **{n: jnp.zeros_like(rest[n]) for n in names}}}

    def set_state(self, state: CanonicalState) -> None:
        """Loads a canonical state, possibly written by another backend."""
        state_io.set_state(self, state)

    def export(self, path: str | Path, format: str) -> Path:
        """Writes the nnx module's state as flat safetensors (`export.export`)."""
        from .export import export

        return export(self, Path(path), format)

    def trace(self, directory: Path) -> AbstractContextManager[Any]:
        """The framework's profiler over the block (`profile.trace`)."""
        from .profile import trace

        return trace(directory)

    @property
    def step(self) -> int:
        """Optimizer updates done (reads one scalar from the device)."""
        return int(jax.device_get(self.carry["step"]))

    @property
    def native_model(self) -> nnx.Module:
        """A fresh nnx module holding the current parameters and statistics."""
        params = nest(self.carry["params"], self._param_paths)
        return nnx.merge(
            self.graphdef, params, nest(self.carry["rest"], self._rest_paths), copy=True
        )
