"""Canonical state ↔ torch tensors: parameters, optimizer slots and RNG.

Layouts: a Dense kernel is canonical `(in, out)` and torch `(out, in)`; a Conv2D kernel is
canonical `HWIO` and torch `OIHW`; a Conv1D kernel canonical `(W, I, O)` and torch `(O, I, W)`.
Slot names and shapes are the optimizer's declaration (`Optimizer.slot_names`/`slot_shapes`);
where the torch optimizer keeps them, and in which layout, is its `optim.SlotLayout`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from crosstrain.checkpoint.format import CanonicalState, check_compatible
from crosstrain.errors import CheckpointError
from crosstrain.nn.dropout import DROPOUT_CALLS, calls_from_state

from .model import ParamRef

if TYPE_CHECKING:
    from crosstrain.nn.optimizers import Optimizer

    from .optim import SlotLayout
    from .program import TorchProgram

_TO_CANONICAL = {"linear": (1, 0), "conv2d": (2, 3, 1, 0), "conv1d": (2, 1, 0)}
_TO_TORCH = {"linear": (1, 0), "conv2d": (3, 2, 0, 1), "conv1d": (2, 1, 0)}


def _is_sharded(tensor: torch.Tensor) -> bool:
    """An FSDP DTensor (its module is imported only once FSDP is in use: it costs ~0.8 s)."""
    dtensors = sys.modules.get("torch.distributed.tensor")
    return dtensors is not None and isinstance(tensor, dtensors.DTensor)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor: an FSDP DTensor gathered (a collective), anything else as it is."""
    return tensor.full_tensor() if _is_sharded(tensor) else tensor


def placed_like(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`value` (a whole, unsharded tensor) laid out as `target`: the same dtype, and under FSDP
    this rank's shard of it (every rank holds the same whole value, so no communication)."""
    value = value.to(dtype=target.dtype)
    if not _is_sharded(target):
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(
        value.to(target.device), target.device_mesh, target.placements, src_data_rank=None
    )


def to_canonical(tensor: torch.Tensor, layout: str, copy: bool = True) -> np.ndarray:
    """A torch tensor as a canonical numpy array (bf16/fp16 become float32).

    With `copy=False` a CPU tensor comes back as a (possibly strided) view of its own memory,
    valid until the tensor changes; other tensors are copied as with `copy=True`.
    An FSDP-sharded tensor is gathered whole first: a collective, every rank must call it.
    """
    tensor = whole(tensor.detach())
    if layout in _TO_CANONICAL:
        tensor = tensor.permute(*_TO_CANONICAL[layout])
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    if not copy and tensor.device.type == "cpu":
        return tensor.numpy()
    return np.array(tensor.cpu().contiguous().numpy(), copy=True)


def canonical_view(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """`tensor` (torch layout) seen in the canonical layout, sharing its memory."""
    order = _TO_CANONICAL.get(layout)
    return tensor if order is None else tensor.permute(*order)


def to_torch(array: np.ndarray, layout: str) -> torch.Tensor:
    """A canonical numpy array as a (CPU) torch tensor in torch layout."""
    array = np.asarray(array, order="C")
    if not array.flags.writeable:
        array = array.copy()
    tensor = torch.from_numpy(array)
    if layout in _TO_TORCH:
        tensor = tensor.permute(*_TO_TORCH[layout])
    return tensor


def canonical_shape(ref: ParamRef) -> tuple[int, ...]:
    """The canonical shape of a parameter from its torch tensor."""
    shape = tuple(ref.tensor.shape)
    if ref.layout in _TO_CANONICAL:
        return tuple(shape[i] for i in _TO_CANONICAL[ref.layout])
    return shape


def params_to_canonical(refs: list[ParamRef], copy: bool = True) -> dict[str, np.ndarray]:
    """Every parameter and buffer of the map, canonical name → numpy array (views of CPU
    tensors when not `copy`)."""
    return {ref.name: to_canonical(ref.tensor, ref.layout, copy) for ref in refs}


@torch.no_grad()
def load_params(refs: list[ParamRef], params: dict[str, np.ndarray]) -> None:
    """Copies canonical arrays into the model's tensors (dtype, device and strides kept)."""
    for ref in refs:
        ref.tensor.copy_(placed_like(to_torch(params[ref.name], ref.layout), ref.tensor))


def trainable(refs: list[ParamRef]) -> Iterator[ParamRef]:
    """The trainable refs, each tensor once (tied weights keep their first name)."""
    seen: set[int] = set()
    for ref in refs:
        if ref.trainable and id(ref.tensor) not in seen:
            seen.add(id(ref.tensor))
            yield ref


def slots_to_canonical(
    refs: list[ParamRef],
    optimizer: torch.optim.Optimizer,
    layout: SlotLayout,
    copy: bool = True,
) -> dict[str, np.ndarray]:
    """Optimizer slots as `<slot>/<param>` → array (views of CPU tensors when not `copy`);
    empty before the first update."""
    out: dict[str, np.ndarray] = {}
    for ref in trainable(refs):
        entry = optimizer.state.get(ref.tensor, {})
        for slot, key in layout.keys.items():
            value = entry.get(key)
            if value is not None:
                out[f"{slot}/{ref.name}"] = to_canonical(
                    value, "" if layout.canonical else ref.layout, copy
                )
    return out


def _check_slots(
    refs: list[ParamRef], values: dict[str, np.ndarray], opt: Optimizer, where: str
) -> None:
    expected = {
        f"{slot}/{ref.name}": shape
        for ref in trainable(refs)
        for slot, shape in opt.slot_shapes(canonical_shape(ref)).items()
    }
    missing = sorted(set(expected) - set(values))
    extra = sorted(set(values) - set(expected))
    wrong = sorted(k for k in set(expected) & set(values) if tuple(values[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"missing {missing[:5]}")
    if extra:
        problems.append(f"unexpected {extra[:5]}")
    if wrong:
        problems.append(
            "shape mismatch "
            + ", ".join(f"{k}: {tuple(values[k].shape)} vs {expected[k]}" for k in wrong[:5])
        )
    if problems:
        raise CheckpointError(
            f"{where}: optimizer state does not fit this optimizer ({'; '.join(problems)})"
        )


def load_slots(
    refs: list[ParamRef],
    optimizer: torch.optim.Optimizer,
    opt: Optimizer,
    layout: SlotLayout,
    values: dict[str, np.ndarray],
    step: int,
    where: str = "torch",
) -> None:
    """Replaces the optimizer's state with canonical slots; no slots means a fresh optimizer.

    Raises:
        CheckpointError: slots missing, unexpected or of the wrong shape for this optimizer.
    """
    if not values:
        optimizer.state.clear()
        return
    _check_slots(refs, values, opt, where)
    index = {
        id(p): i
        for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])
    }
    state: dict[int, dict[str, torch.Tensor]] = {}
    for ref in trainable(refs):
        param = ref.tensor
        entry: dict[str, torch.Tensor] = {}
        for slot, key in layout.keys.items():
            array = values[f"{slot}/{ref.name}"]
            if layout.canonical and not (
                _is_sharded(param) and array.shape == canonical_shape(ref)
            ):
                # the rule's own layout: canonical, on the parameter's device
                entry[key] = to_torch(array, "").to(device=param.device, dtype=param.dtype)
                continue
            value = to_torch(array, ref.layout)
            if not _is_sharded(param):
                value = torch.empty_like(param, device="cpu").copy_(value)
            value = placed_like(value, param)
            entry[key] = canonical_view(value, ref.layout) if layout.canonical else value
        if layout.counts_steps:
            entry["step"] = torch.tensor(float(step), dtype=torch.float32)
        state[index[id(param)]] = entry
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


def rng_state(device: torch.device) -> dict[str, np.ndarray]:
    """The torch RNG states that drive dropout on `device`, as uint8 arrays."""
    out = {"torch": torch.get_rng_state().numpy().copy()}
    if device.type == "cuda":
        out["torch_cuda"] = torch.cuda.get_rng_state(device).numpy().copy()
    return out


def set_rng_state(rng: dict[str, np.ndarray], device: torch.device) -> None:
    """Restores the RNG states present in `rng` (another backend's keys are ignored)."""
    if "torch" in rng:
        torch.set_rng_state(torch.from_numpy(np.asarray(rng["torch"], dtype=np.uint8).copy()))
    if "torch_cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(
            torch.from_numpy(np.asarray(rng["torch_cuda"], dtype=np.uint8).copy()), device
        )


def get_state(program: TorchProgram, copy: bool = True) -> CanonicalState:
    """The program's parameters, optimizer slots, update count and torch RNG, canonical and
    on the host (`Program.get_state`); with `copy=False` CPU tensors are not copied but seen
    through numpy views (`Program.state_for_write`)."""
    rng = rng_state(program.device)
    if program.dropout_key is not None:
        rng[DROPOUT_CALLS] = np.asarray(program.dropout_key.calls, np.int64)
    return CanonicalState(
        params=params_to_canonical(program.refs, copy),
        optimizer=slots_to_canonical(program.refs, program.optimizer, program.slot_layout, copy),
        step=program.step,
        rng=rng,
    )


def set_state(program: TorchProgram, state: CanonicalState) -> None:
    """Loads a canonical state, possibly from another backend (which has no torch RNG and may
    have no optimizer slots) into the program (`Program.set_state`).

    Raises:
        CheckpointError: parameter or slot names or shapes do not fit this model/optimizer.
    """
    shapes = {ref.name: canonical_shape(ref) for ref in program.refs}
    check_compatible(state, shapes, program.backend)
    load_params(program.refs, state.params)
    load_slots(
        program.refs,
        program.optimizer,
        program.spec.optimizer,
        program.slot_layout,
        state.optimizer,
        state.step,
        program.backend,
    )
    program.step = int(state.step)
    set_rng_state(state.rng, program.device)
    if program.dropout_key is not None:
        accumulate = program.spec.trainer.accumulate_grad_batches
        program.dropout_key.calls = calls_from_state(state.rng, state.step, accumulate)
