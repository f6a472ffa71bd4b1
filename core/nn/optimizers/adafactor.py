"""Adafactor (Shazeer & Stern 2018; Keras's `Adafactor`: arguments, defaults and rule).

A parameter of rank ≥ 2 keeps factored second moments: `r` (its shape without the last axis)
and `c` (without the second-to-last); `v` is then a 0-d placeholder. A vector or scalar keeps
the full `v`, and `r`, `c` are 0-d placeholders. Axes are the canonical layout's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveFloat

from .base import Optimizer, decoupled


def _rms(xp: Any, x: Any) -> Any:
    return xp.sqrt(xp.mean(x * x))


def _at_least(xp: Any, x: Any, low: Any) -> Any:
    return xp.where(x > low, x, xp.zeros_like(x) + low)


class Adafactor(Optimizer):
    """Relative step `min(lr, 1/√t)` scaled by the parameter's RMS; the update is clipped to
    RMS `clip_threshold`; second moments decay with `1 - t^beta_2_decay`."""

    name: Literal["adafactor"] = "adafactor"
    beta_2_decay: float = Field(-0.8, description="second moments decay with `1 - t^beta_2_decay`")
    epsilon_1: PositiveFloat = Field(1e-30, description="added to the squared gradient")
    epsilon_2: PositiveFloat = Field(1e-3, description="least parameter RMS the step scales by")
    clip_threshold: PositiveFloat = Field(1.0, description="largest RMS of the update")
    relative_step: bool = Field(True, description="step at most `1/√t` (Keras's argument)")

    slots = ("r", "c", "v")

    def slot_shapes(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        shape = tuple(shape)
        if len(shape) < 2:
            return {"r": (), "c": (), "v": shape}
        return {"r": shape[:-1], "c": shape[:-2] + shape[-1:], "v": ()}

    def update(self, xp, grad, param, slots, count, lr, weight_decay) -> Any:  # noqa: ANN001
        param = decoupled(param, lr, weight_decay)
        rho_t = xp.minimum(xp.zeros_like(count) + lr, 1.0 / xp.sqrt(count))
        alpha_t = _at_least(xp, _rms(xp, param), self.epsilon_2) * rho_t
        square = grad * grad + self.epsilon_1
        beta_2_t = 1.0 - count**self.beta_2_decay
        if len(param.shape) >= 2:
            r = beta_2_t * slots["r"] + (1.0 - beta_2_t) * xp.mean(square, axis=-1)
            c = beta_2_t * slots["c"] + (1.0 - beta_2_t) * xp.mean(square, axis=-2)
            row = r / xp.mean(r, axis=-1, keepdims=True)
            v = xp.expand_dims(row, axis=-1) * xp.expand_dims(c, axis=-2)
            new = {"r": r, "c": c, "v": slots["v"]}
        else:
            v = beta_2_t * slots["v"] + (1.0 - beta_2_t) * square
            new = {"r": slots["r"], "c": slots["c"], "v": v}
        u = grad / xp.sqrt(v)
        u = u / _at_least(xp, _rms(xp, u) / self.clip_threshold, 1.0)
        return param - alpha_t * u, new
