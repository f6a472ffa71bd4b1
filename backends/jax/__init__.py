"""The JAX backend: flax nnx modules and optax behind plain `jax.jit` steps.

Importing this package imports no JAX: it only registers `JaxBackend`, which imports JAX when
it builds a program or lists devices.
"""

from __future__ import annotations

from crosstrain.plugin.hookspecs import hookimpl

from .plugin import JaxBackend

__all__ = ["JaxBackend", "crosstrain_add_backends"]


@hookimpl
def crosstrain_add_backends() -> list[JaxBackend]:
    """The JAX backend, registered like any third party's."""
    return [JaxBackend()]
