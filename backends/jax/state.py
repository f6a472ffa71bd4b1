"""The JAX program's training state and its canonical form.

The program keeps one pytree of plain containers (fast to flatten on every step):

```
{"params": {canonical name: array},   trainable (nnx.Param)
 "rest":   {canonical name: array},   BatchNorm moving statistics (nnx.BatchStat)
 "opt":    {"slots": {slot: {name: array}}}, the canonical slots
 "step":   int32,                     optimizer updates done
 "key":    uint32[2],                 the base PRNG key (raw key data)
 "calls":  int32}                     training forwards (only with shared dropout masks)
```

In canonical form, `params` holds both dicts, `optimizer` holds `<slot>/<name>`, `step` is the
step and `rng` is `{"jax": key}`, plus the neutral `dropout_calls` with shared dropout masks. A state from another backend has no `jax` rng entry; the
program then keeps its own key derived from the seed.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from crosstrain.checkpoint.format import CanonicalState, check_compatible
from crosstrain.checkpoint.weights import initial_params
from crosstrain.errors import CheckpointError
from crosstrain.nn.dropout import DROPOUT_CALLS, calls_from_state
from crosstrain.nn.initializers import native_name
from crosstrain.nn.model import ModelSpec, param_specs

from .optim import JaxOptimizer, get_slots, with_slots

if TYPE_CHECKING:
    from .program import JaxProgram

Carry = dict[str, Any]


def get_state(program: JaxProgram) -> CanonicalState:
    """The program's state in canonical form, numpy copies (`Program.get_state`)."""
    return carry_to_canonical(program.carry)


def set_state(program: JaxProgram, state: CanonicalState) -> None:
    """Loads a canonical state, possibly from another backend, onto the program's devices
    (`Program.set_state`).

    Raises:
        CheckpointError: parameter names or shapes do not fit, or a slot has the wrong shape.
    """
    host = carry_from_canonical(
        state,
        program.carry,
        program.tx,
        program.slots,
        program.spec.trainer.accumulate_grad_batches,
    )
    program.carry = program.placement.put_state(host)


def carry_to_canonical(carry: Carry) -> CanonicalState:
    """Canonical numpy state from a carry (device or host arrays); always copies."""
    host = jax.device_get(carry)

    def own(array: Any) -> np.ndarray:
        return np.array(array, copy=True)

    params = {name: own(v) for name, v in {**host["params"], **host["rest"]}.items()}
    optimizer = {
        f"{slot}/{name}": own(v)
        for slot, values in get_slots(host["opt"]).items()
        for name, v in values.items()
    }
    rng = {"jax": own(host["key"]).astype(np.uint32)}
    if "calls" in host:
        rng[DROPOUT_CALLS] = np.asarray(host["calls"], np.int64)
    return CanonicalState(params, optimizer, int(host["step"]), rng)


def carry_from_canonical(
    state: CanonicalState,
    carry: Carry,
    tx: JaxOptimizer,
    slots: tuple[str, ...],
    accumulate: int = 1,
) -> Carry:
    """A host carry holding `state`, shaped like `carry` (the program's current one);
    `accumulate` is the run's micro-batches per step (see `calls_from_state`).

    Raises:
        CheckpointError: parameter names or shapes do not fit, or an optimizer slot has the
            wrong shape; the message names them.
    """
    shapes = {n: tuple(np.shape(v)) for n, v in {**carry["params"], **carry["rest"]}.items()}
    check_compatible(state, shapes, "jax")
    params = {n: np.asarray(state.params[n], np.float32) for n in carry["params"]}
    rest = {n: np.asarray(state.params[n], np.float32) for n in carry["rest"]}
    loaded: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.optimizer.items():
        slot, _, name = key.partition("/")
        if slot not in slots or name not in params:
            continue
        expected = tx.opt.slot_shapes(shapes[name])[slot]
        if tuple(value.shape) != expected:
            raise CheckpointError(
                f"jax: optimizer slot {key} has shape {tuple(value.shape)}, expected {expected}"
            )
        loaded.setdefault(slot, {})[name] = np.asarray(value, np.float32)
    opt = with_slots(tx.init(params), loaded)
    key = state.rng.get("jax")
    key = (
        np.asarray(key, np.uint32).reshape(-1)
        if key is not None and np.size(key) == 2
        else np.asarray(jax.device_get(carry["key"]))
    )
    host = {
        "params": params,
        "rest": rest,
        "opt": jax.device_get(opt),
        "step": np.int32(state.step),
        "key": key,
    }
    if "calls" in carry:
        host["calls"] = np.int32(calls_from_state(state.rng, state.step, accumulate))
    return host


def seed_key_data(seed: int) -> np.ndarray:
    """Raw threefry key data for a seed: its high and low 32 bits (jax.random.key(seed) for
    seeds below 2**32, without truncating larger ones)."""
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], np.uint32)


def native_initial_values(model: ModelSpec, seed: int) -> dict[str, jax.Array]:
    """`model.init: native`: the initialisers of `crosstrain.nn.model.init_params`, drawn with
    `jax.random` on the default device (a stream per parameter name, as core does), so large
    models never pass through host memory. Same distributions, not the same values."""
    base = jax.random.wrap_key_data(jnp.asarray(seed_key_data(seed)))
    values = {}
    values.update(initial_params(model, seed, core_only=True))
    for name, spec in param_specs(model).items():
        init = native_name(spec.init)
        if init is None or name in values:
            continue  # drawn or given by core above
        key = jax.random.fold_in(base, zlib.crc32(name.encode()) & 0x7FFFFFFF)
        if init in ("zeros", "ones"):
            values[name] = (jnp.zeros if init == "zeros" else jnp.ones)(spec.shape, jnp.float32)
            continue
        limit = 0.05 if init == "uniform_0.05" else float(np.sqrt(6.0 / sum(spec.fans)))
        values[name] = jax.random.uniform(key, spec.shape, jnp.float32, -limit, limit)
    return values
