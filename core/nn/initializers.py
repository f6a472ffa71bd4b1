"""Parameter initialisers by Keras's names and arguments, drawn by core with numpy.

Every backend loads the values core draws here from the seed (`crosstrain.nn.model.init_params`),
so a spec starts from the same weights on torch, jax and Keras. A layer with parameters takes
Keras's `kernel_initializer` / `bias_initializer` (Embedding: `embeddings_initializer`; norms:
`gamma_initializer` / `beta_initializer`; recurrent layers: `recurrent_initializer`), written as a
name or `{name: ..., options: {...}}`:

    kernel_initializer: he_normal
    kernel_initializer: {name: truncated_normal, options: {stddev: 0.02}}
    kernel_initializer: {name: mypackage.inits:scaled, options: {scale: 0.5}}

A `module:function` reference is called as `function(shape, rng, **options)` with the canonical
shape and a seeded `numpy.random.Generator`, and must return an array of that shape.
The variance-scaling initialisers use the layer's fans (a Dense kernel `(in, out)`, a
convolution's receptive field times its channels) as Keras computes them.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

_TRUNCATED_STD = 0.87962566103423978
"""Standard deviation of a unit normal truncated at two standard deviations (Keras's factor)."""


def _truncated(rng: np.random.Generator, shape: tuple[int, ...], mean: float, std: float):
    """A normal truncated at two standard deviations, by redrawing the values outside."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return mean + std * values


def _variance_scaling(scale: float, mode: str, distribution: str):
    def draw(shape, rng, fans):
        fan_in, fan_out = fans
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / max(1.0, fan)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape)
        return _truncated(rng, shape, 0.0, math.sqrt(variance) / _TRUNCATED_STD)

    return draw


def _glorot_uniform(shape, rng, fans):
    # as before the registry existed (the same draws, so old runs start from the same values)
    limit = np.sqrt(6.0 / (fans[0] + fans[1]))
    return rng.uniform(-limit, limit, shape)


def _orthogonal(shape, rng, fans, gain=1.0):
    if len(shape) < 2:
        raise ValueError("orthogonal needs a parameter with at least two axes")
    rows, cols = math.prod(shape[:-1]), shape[-1]
    flat = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


def _constant(shape, rng, fans, value=0.0):
    return np.full(shape, value)


_BUILTIN: dict[str, tuple[Callable[..., np.ndarray], dict[str, Any]]] = {
    "zeros": (lambda shape, rng, fans: np.zeros(shape), {}),
    "ones": (lambda shape, rng, fans: np.ones(shape), {}),
    "constant": (_constant, {"value": 0.0}),
    "glorot_uniform": (_glorot_uniform, {}),
    "glorot_normal": (_variance_scaling(1.0, "fan_avg", "normal"), {}),
    "he_normal": (_variance_scaling(2.0, "fan_in", "normal"), {}),
    "he_uniform": (_variance_scaling(2.0, "fan_in", "uniform"), {}),
    "lecun_normal": (_variance_scaling(1.0, "fan_in", "normal"), {}),
    "lecun_uniform": (_variance_scaling(1.0, "fan_in", "uniform"), {}),
    "random_normal": (
        lambda shape, rng, fans, mean=0.0, stddev=0.05: rng.normal(mean, stddev, shape),
        {"mean": 0.0, "stddev": 0.05},
    ),
    "truncated_normal": (
        lambda shape, rng, fans, mean=0.0, stddev=0.05: _truncated(rng, shape, mean, stddev),
        {"mean": 0.0, "stddev": 0.05},
    ),
    "random_uniform": (
        lambda shape, rng, fans, minval=-0.05, maxval=0.05: rng.uniform(minval, maxval, shape),
        {"minval": -0.05, "maxval": 0.05},
    ),
    "orthogonal": (_orthogonal, {"gain": 1.0}),
}
ALIASES = {"normal": "random_normal", "uniform": "random_uniform", "uniform_0.05": "random_uniform"}
"""Keras's short names (and the pre-registry name of Embedding's default)."""

INITIALIZER_NAMES: tuple[str, ...] = tuple(sorted([*_BUILTIN, "normal", "uniform"]))


class Initializer(BaseModel):
    """An initialiser: a Keras name (`he_normal`, `truncated_normal` ...) or
    `package.module:function`, plus its keyword options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="a Keras initialiser name or `package.module:function`")
    options: dict[str, Any] = Field(
        default_factory=dict, description="its arguments (`stddev`, `mean`, `gain`, `value` ...)"
    )

    @model_validator(mode="after")
    def _known(self) -> Initializer:
        problem = self._problem()
        if problem:
            raise PydanticCustomError("initializer", "{problem}", {"problem": problem})
        return self

    def _problem(self) -> str | None:
        if ":" in self.name:
            module, _, function = self.name.partition(":")
            if not module or not function.isidentifier():
                return f"{self.name!r} is not a `package.module:function` reference"
            return None
        canonical = ALIASES.get(self.name, self.name)
        if canonical not in _BUILTIN:
            return (
                f"unknown initializer {self.name!r}; choose one of {', '.join(INITIALIZER_NAMES)} "
                "or a `package.module:function`"
            )
        allowed = _BUILTIN[canonical][1]
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            takes = ", ".join(allowed) if allowed else "no options"
            return f"initializer {self.name!r} takes {takes}; not {', '.join(unknown)}"
        return None

    def __hash__(self) -> int:
        return hash((self.name, repr(sorted(self.options.items()))))


def _as_initializer(value: Any) -> Any:
    """`he_normal` is short for `{name: he_normal}`."""
    return {"name": value} if isinstance(value, str) else value


InitializerOption = Annotated[Initializer | None, BeforeValidator(_as_initializer)]
"""A layer's `*_initializer` option: None keeps the layer's (Keras's) default."""


def keras_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras's `compute_fans`: (fan_in, fan_out) of a parameter shape."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _reference(name: str) -> Callable[..., np.ndarray]:
    module, _, function = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import initializer {name!r}: {err}") from None
    if not callable(fn):
        raise ValueError(f"initializer {name!r} is not callable")
    return fn


def draw(
    init: str | Initializer,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    fans: tuple[int, int] | None = None,
) -> np.ndarray:
    """A float32 array of `shape` drawn by `init` from `rng`.

    Args:
        init: a name (`glorot_uniform`) or an Initializer.
        shape: the canonical shape.
        rng: the parameter's own seeded generator.
        fans: `(fan_in, fan_out)` as the layer declares them (default: Keras's from the shape).

    Raises:
        ValueError: an unknown name, or a reference that fails or returns the wrong shape.
    """
    spec = Initializer(name=init) if isinstance(init, str) else init
    shape = tuple(int(n) for n in shape)
    fans = tuple(fans) if fans is not None and tuple(fans) != (1, 1) else keras_fans(shape)
    if ":" in spec.name:
        fn = _reference(spec.name)
        value = np.asarray(fn(shape, rng, **spec.options))
        if value.shape != shape:
            raise ValueError(
                f"initializer {spec.name!r} returned shape {value.shape}, expected {shape}"
            )
        return value.astype(np.float32)
    fn, defaults = _BUILTIN[ALIASES.get(spec.name, spec.name)]
    return np.asarray(fn(shape, rng, fans, **{**defaults, **spec.options}), np.float32)


def native_name(init: str | Initializer) -> str | None:
    """The plain name of an initialiser a backend's `model.init: native` draws itself
    (`zeros`, `ones`, `glorot_uniform`, `uniform_0.05`), else None (core draws it)."""
    if isinstance(init, Initializer):
        if init.options:
            return None
        init = init.name
    init = {"random_uniform": "uniform_0.05", "uniform": "uniform_0.05"}.get(init, init)
    return init if init in ("zeros", "ones", "glorot_uniform", "uniform_0.05") else None


__all__ = ["INITIALIZER_NAMES", "Initializer", "InitializerOption", "draw", "keras_fans"]
