"""RMSNorm as a flax nnx module (imported only by the jax backend)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class JaxRMSNorm(nnx.Module):
    """RMSNorm over the last axis with a learned `scale`."""

    def __init__(self, features: int, epsilon: float):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.epsilon = epsilon

    def __call__(self, x: jax.Array) -> jax.Array:
        ms = jnp.mean(x * x, axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(ms + self.epsilon) * self.scale[...].astype(x.dtype)
