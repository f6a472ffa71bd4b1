"""Canonical state ↔ Keras variables: parameters, optimizer slots, step count and seeds.

Parameters map through the model's `ParamRef`s (canonical layouts are Keras's, up to a reshape
for attention kernels). Optimizer slots are `SpecOptimizer.slots[<slot>][i]`, stored as
`<slot>/<param>`; the step is the optimizer's `iterations`. Dropout seed-generator states are
kept under `rng["keras/seed_<i>"]` in model order; a state from another backend has none, and the
program keeps its own. Slots missing from a state (torch writes none before its first update)
load as the optimizer's `init` (zeros, or adagrad's initial accumulator).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from crosstrain.checkpoint.format import CanonicalState, check_compatible
from crosstrain.errors import CheckpointError
from crosstrain.nn.dropout import DROPOUT_CALLS, calls_from_state

from .model import ParamRef, to_numpy
from .optim import inner

if TYPE_CHECKING:
    from .program import KerasProgram

RNG_PREFIX = "keras/"


def _seed_states(model: Any, refs: list[ParamRef]) -> list[Any]:
    """The model's non-trainable variables that are not parameters or dropout call counters:
    seed-generator states."""
    known = {id(r.variable) for r in refs}
    return [
        v for v in model.non_trainable_variables if id(v) not in known and v.name != DROPOUT_CALLS
    ]


def _call_counters(model: Any) -> list[Any]:
    """The `calls` variables of the model's `SharedDropout` layers (all hold the same count)."""
    return [v for v in model.non_trainable_variables if v.name == DROPOUT_CALLS]


def _slot_variables(optimizer: Any, refs: list[ParamRef]) -> dict[str, tuple[tuple[int, ...], Any]]:
    """`<slot>/<param>` → (the slot's canonical shape, its variable)."""
    opt = inner(optimizer)
    found = {}
    for ref in refs:
        if ref.trainable:
            index = opt._get_variable_index(ref.variable)
            shapes = opt.spec.slot_shapes(ref.shape)
            for slot in opt.slot_names:
                found[f"{slot}/{ref.name}"] = (shapes[slot], opt.slots[slot][index])
    return found


def _initial_slots(optimizer: Any, refs: list[ParamRef]) -> dict[str, np.ndarray]:
    """`<slot>/<param>` → the slot before any update (`Optimizer.init`), for a state without it."""
    spec = inner(optimizer).spec
    out = {}
    for ref in refs:
        if ref.trainable:
            for slot, value in spec.init(np, np.zeros(ref.shape, np.float32)).items():
                out[f"{slot}/{ref.name}"] = np.asarray(value, np.float32)
    return out


def get_state(program: KerasProgram, values: dict[int, np.ndarray]) -> CanonicalState:
    """Canonical numpy copies of the program's variables (`Program.get_state`); `values` holds
    the current value of a variable by `id` where the compiled steps keep it (else the
    variable is read)."""
    model, optimizer, refs = program.model, program.optimizer, program.refs

    def read(variable: Any) -> np.ndarray:
        found = values.get(id(variable))
        return to_numpy(variable.value) if found is None else found

    params = {ref.name: ref.canonical(read(ref.variable)) for ref in refs}
    slots = {
        key: read(var).astype(np.float32).reshape(shape)
        for key, (shape, var) in _slot_variables(optimizer, refs).items()
    }
    step = int(read(inner(optimizer).iterations))
    rng = {f"{RNG_PREFIX}seed_{i}": read(v) for i, v in enumerate(_seed_states(model, refs))}
    counters = _call_counters(model)
    if counters:
        rng[DROPOUT_CALLS] = read(counters[0]).astype(np.int64)
    return CanonicalState(params, slots, step, rng)


def set_state(program: KerasProgram, state: CanonicalState) -> None:
    """Assigns a canonical state (from any backend) to the program's variables
    (`Program.set_state`; the caller holds the program's scope and syncs the steps).

    Raises:
        CheckpointError: parameter names or shapes do not fit, or a slot has the wrong shape.
    """
    model, optimizer, refs = program.model, program.optimizer, program.refs
    backend = program.backend
    check_compatible(state, {r.name: r.shape for r in refs}, backend)
    for key, (shape, _) in _slot_variables(optimizer, refs).items():
        value = state.optimizer.get(key)
        if value is not None and tuple(value.shape) != shape:
            raise CheckpointError(
                f"{backend}: optimizer slot {key} has shape {tuple(value.shape)}, expected {shape}"
            )
    for ref in refs:
        ref.write(state.params[ref.name])
    initial = _initial_slots(optimizer, refs)
    for key, (_, var) in _slot_variables(optimizer, refs).items():
        value = state.optimizer.get(key)
        value = initial[key] if value is None else np.asarray(value, np.float32)
        var.assign(value.reshape(tuple(var.shape)))
    inner(optimizer).iterations.assign(int(state.step))
    for i, variable in enumerate(_seed_states(model, refs)):
        saved = state.rng.get(f"{RNG_PREFIX}seed_{i}")
        if saved is not None and tuple(saved.shape) == tuple(variable.shape):
            variable.assign(np.asarray(saved).astype(to_numpy(variable.value).dtype))
    calls = calls_from_state(state.rng, state.step, program.spec.trainer.accumulate_grad_batches)
    for variable in _call_counters(model):
        variable.assign(np.int32(calls))
