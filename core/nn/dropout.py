"""Shared dropout masks (`model.dropout_masks: shared`): one mask generator for every backend.

Each framework draws dropout masks from its own generator, so with dropout torch, JAX and Keras
runs of one spec drift apart. In `shared` mode every backend computes the mask of a training
forward with the integer hash below instead, written once against the array API and evaluated
inside the backend's compiled step (int32 arithmetic with wrap-around, which numpy, torch, XLA
and TensorFlow all implement the same way), so the masks, and the losses, agree bit for bit
where the float math does.

The mask of one Dropout in one forward depends on:
- the run's `seed`;
- `calls`, the number of training forwards the program ran before this one (one per step, one
  per micro-batch under gradient accumulation); it is saved in checkpoints as the neutral rng
  entry `DROPOUT_CALLS` so a resumed run, on any backend, continues the same masks;
- the Dropout's canonical name (`name_salt`);
- the position of the element in the tensor (row-major).

It is a statistical hash (Chris Wellons' `lowbias32`), not a cryptographic generator: masks
from different calls, layers and positions are decorrelated, which is what dropout needs.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Literal

import numpy as np

DropoutMasks = Literal["native", "shared"]
"""`model.dropout_masks`: each framework's own generator, or the hash of this module."""

DROPOUT_CALLS = "dropout_calls"
"""The canonical-state rng entry holding `calls` (a 0-d int64 array)."""

_M1 = 0x7FEB352D
_M2 = 0x846CA68B - 2**32  # as int32
_GOLDEN = 0x9E3779B9 - 2**32
_MASK_BITS = 24


def _int32(value: int) -> int:
    """`value` reduced to a signed 32-bit integer."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def _logical_shift(xp: Any, x: Any, bits: int) -> Any:
    return xp.bitwise_and(xp.bitwise_right_shift(x, bits), (1 << (32 - bits)) - 1)


def hash32(xp: Any, x: Any) -> Any:
    """`lowbias32` of every element of the int32 array `x` (wrap-around int32 arithmetic)."""
    x = xp.bitwise_xor(x, _logical_shift(xp, x, 16))
    x = xp.multiply(x, xp.asarray(_M1, dtype=xp.int32))
    x = xp.bitwise_xor(x, _logical_shift(xp, x, 15))
    x = xp.multiply(x, xp.asarray(_M2, dtype=xp.int32))
    return xp.bitwise_xor(x, _logical_shift(xp, x, 16))


def name_salt(name: str) -> int:
    """The per-layer constant of a Dropout, from its canonical name."""
    return _int32(zlib.crc32(name.encode()))


def call_key(xp: Any, seed: int, calls: Any, rank: int = 0) -> Any:
    """The int32 key of one training forward: `seed` and the forward's number `calls` (an int32
    array of shape ()), and for torch's data parallel the process `rank` (each process's own
    rows then get their own masks)."""
    key = hash32(xp, xp.bitwise_xor(xp.asarray(calls, dtype=xp.int32), _int32(seed * _GOLDEN)))
    if rank:
        key = hash32(xp, xp.bitwise_xor(key, _int32(rank * _GOLDEN + 1)))
    return key


def host_call_key(seed: int, calls: int, rank: int = 0) -> int:
    """`call_key` computed on the host, as a Python int (what torch fills its key tensor with)."""
    return int(call_key(np, seed, np.asarray(_int32(calls), dtype=np.int32), rank))


def _positions(xp: Any, x: Any) -> Any:
    """The row-major index of every element of `x`, as int32 of `x`'s shape (the batch axis
    may be unknown while tracing, as in a TensorFlow graph; the others are known)."""
    shape = tuple(x.shape)
    if all(isinstance(d, int) for d in shape):
        return xp.reshape(xp.arange(math.prod(shape), dtype=xp.int32), shape)
    rows = xp.shape(x)[0] if hasattr(xp, "shape") else x.shape[0]
    per_row = math.prod(shape[1:])
    return xp.reshape(xp.arange(rows * per_row, dtype=xp.int32), (-1, *shape[1:]))


def keep_mask(xp: Any, x: Any, key: Any, salt: int, rate: float) -> Any:
    """The boolean mask of the elements of `x` that one Dropout keeps in one forward."""
    layer_key = hash32(xp, xp.bitwise_xor(key, salt))
    mixed = hash32(xp, xp.bitwise_xor(layer_key, _GOLDEN))
    bits = hash32(xp, xp.bitwise_xor(hash32(xp, xp.add(_positions(xp, x), layer_key)), mixed))
    threshold = round(rate * (1 << _MASK_BITS))
    return xp.bitwise_and(bits, (1 << _MASK_BITS) - 1) >= threshold


def shared_dropout(xp: Any, x: Any, key: Any, salt: int, rate: float) -> Any:
    """Dropout of `x` with the shared mask: kept elements scaled by `1 / (1 - rate)`, the others 0."""
    if rate == 0.0:
        return x
    keep = keep_mask(xp, x, key, salt, rate)
    scaled = x / (1.0 - rate)
    return xp.where(keep, scaled, xp.zeros_like(scaled))


def calls_from_state(rng: dict[str, np.ndarray], step: int, accumulate: int) -> int:
    """`calls` of a canonical state: its `DROPOUT_CALLS` entry, or, for a checkpoint written
    with native masks, the number of forwards its steps ran (`step * accumulate`)."""
    saved = rng.get(DROPOUT_CALLS)
    if saved is not None and np.asarray(saved).size == 1:
        return int(np.asarray(saved).reshape(()))
    return int(step) * int(accumulate)
