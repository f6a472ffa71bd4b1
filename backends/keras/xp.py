"""The array namespace losses and metrics see on each Keras engine.

Losses and metrics are written once against the array API standard (`fn(xp, outputs,
targets)`). On the jax and torch engines the tensors are jax arrays and torch tensors, whose
namespaces `array_api_compat` provides. TensorFlow tensors have none, so `KerasOpsNamespace`
supplies the array API functions the shared code uses on top of `keras.ops` (it works on every
engine; tensorflow is where it is needed).
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import keras
from keras import ops

_KINDS = {
    "bool": ("bool",),
    "signed integer": ("int8", "int16", "int32", "int64"),
    "unsigned integer": ("uint8", "uint16", "uint32", "uint64"),
    "real floating": ("float16", "bfloat16", "float32", "float64"),
    "complex floating": ("complex64", "complex128"),
}
_KINDS["integral"] = _KINDS["signed integer"] + _KINDS["unsigned integer"]
_KINDS["numeric"] = _KINDS["integral"] + _KINDS["real floating"] + _KINDS["complex floating"]
_RENAMED = {
    "concat": "concatenate",
    "permute_dims": "transpose",
    "pow": "power",
    "asin": "arcsin",
    "acos": "arccos",
    "atan": "arctan",
    "atan2": "arctan2",
    "asinh": "arcsinh",
    "acosh": "arccosh",
    "atanh": "arctanh",
    "bitwise_invert": "bitwise_not",
}


def _dtype(dtype: Any) -> str:
    return keras.backend.standardize_dtype(dtype)


class KerasOpsNamespace:
    """An array API namespace over `keras.ops` (the subset losses and metrics need, plus every
    `keras.ops` function whose name the standard shares).

    `arange` defaults to int64, the dtype integer targets arrive in, since tensorflow does not
    promote between integer widths.
    """

    __name__ = "crosstrain.backends.keras.xp"

    bool = "bool"
    int32, int64, uint8 = "int32", "int64", "uint8"
    float16, bfloat16, float32, float64 = "float16", "bfloat16", "float32", "float64"

    def __getattr__(self, name: str) -> Any:
        return getattr(ops, _RENAMED.get(name, name))

    @staticmethod
    def astype(x: Any, dtype: Any, copy: bool = True) -> Any:
        return ops.cast(x, _dtype(dtype))

    @staticmethod
    def isdtype(dtype: Any, kind: Any) -> bool:
        name = _dtype(dtype)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        return any(
            name in _KINDS[k] if isinstance(k, str) and k in _KINDS else name == _dtype(k)
            for k in kinds
        )

    @staticmethod
    def asarray(x: Any, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
        return ops.convert_to_tensor(x, dtype=None if dtype is None else _dtype(dtype))

    @staticmethod
    def arange(
        start: Any, stop: Any = None, step: Any = 1, *, dtype: Any = None, device: Any = None
    ) -> Any:
        return ops.arange(start, stop, step, dtype=_dtype(dtype or "int64"))

    @staticmethod
    def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> Any:
        return ops.zeros(shape, dtype=_dtype(dtype or "float32"))

    @staticmethod
    def ones(shape: Any, *, dtype: Any = None, device: Any = None) -> Any:
        return ops.ones(shape, dtype=_dtype(dtype or "float32"))

    @staticmethod
    def full(shape: Any, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Any:
        return ops.full(shape, fill_value, dtype=None if dtype is None else _dtype(dtype))

    @staticmethod
    def reshape(x: Any, shape: Any, copy: Any = None) -> Any:
        return ops.reshape(x, shape)

    @staticmethod
    def max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return ops.max(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def min(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return ops.min(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def sum(x: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
        return ops.sum(
            x if dtype is None else ops.cast(x, _dtype(dtype)), axis=axis, keepdims=keepdims
        )

    @staticmethod
    def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return ops.mean(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def argmax(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return ops.argmax(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def argmin(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return ops.argmin(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def var(x: Any, axis: Any = None, correction: float = 0.0, keepdims: bool = False) -> Any:
        value = ops.var(x, axis=axis, keepdims=keepdims)
        if not correction:
            return value
        count = ops.cast(ops.size(x) // ops.size(ops.mean(x, axis=axis)), value.dtype)
        return value * count / (count - correction)

    @staticmethod
    def std(x: Any, axis: Any = None, correction: float = 0.0, keepdims: bool = False) -> Any:
        return ops.sqrt(KerasOpsNamespace.var(x, axis, correction, keepdims))


KERAS_OPS = KerasOpsNamespace()


def namespace(*arrays: Any) -> Any:
    """The array API namespace of engine tensors: array_api_compat's where it knows them (jax,
    torch, numpy), else `KERAS_OPS` (tensorflow)."""
    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError:
        return KERAS_OPS
