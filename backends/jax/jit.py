"""The `jax.jit` wrappers of `JaxProgram`'s pure step bodies, built on first use and cached.

A wrapper sets the matmul precision while tracing, donates the carry of a training step,
gathers the rows of a batch inside the step when the data set is cached on the devices
(`DeviceData`), and on a mesh gives the data its batch sharding and the outputs the replicated
one. `put` and `global_batch` place batch arrays the way those wrappers take them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .device import Placement


def _quiet(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Traces `fn` without jax's notes about int64 being stored as int32 (x64 is off)."""

    def traced(*args: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*int64.*not available.*")
            return fn(*args)

    return traced


class CompiledSteps:
    """The jitted steps of one program.

    Attributes:
        bodies: the pure functions by kind: `train`, `scan`, `accumulate` (their first argument
            the carry) and `eval`, `predict` (`params, rest` first).
        placement: the program's devices and shardings.
        precision: `jax.default_matmul_precision` while tracing (None: jax's default).
    """

    def __init__(
        self, bodies: dict[str, Callable[..., Any]], placement: Placement, precision: str | None
    ):
        self.bodies, self.placement, self.precision = bodies, placement, precision
        self._jitted: dict[tuple[str, Any, bool], Callable[..., Any]] = {}

    def _precision(self) -> Any:
        return jax.default_matmul_precision(self.precision) if self.precision else nullcontext()

    def step(self, kind: str, rows: int, cached: bool = False) -> tuple[Callable[..., Any], Any]:
        """The jitted function for `kind` and the sharding its batch arrays (or row indices) take.

        With `cached`, the data arguments are `(x_all, y_all, rows)`: the data set already on
        the devices and the indices of the batch, gathered inside the compiled step.
        """
        sharding = self.placement.batch_sharding(rows, stacked=kind == "scan")
        cache_key = (kind, sharding, cached)
        if cache_key not in self._jitted:
            body = self.bodies[kind]
            states = 1 if kind in ("train", "scan") else 2

            def traced(*args: Any) -> Any:
                if cached:
                    x_all, y_all, index = args[states:]
                    args = (
                        *args[:states],
                        jnp.take(x_all, index, axis=0),
                        jnp.take(y_all, index, axis=0),
                    )
                with self._precision():
                    return body(*args)

            options: dict[str, Any] = {"donate_argnums": 0} if states == 1 else {}
            if self.placement.mesh is not None:
                repl = self.placement.replicated
                data = (
                    (repl, repl, sharding)
                    if cached
                    else (sharding,) * (1 if kind == "predict" else 2)
                )
                options["in_shardings"] = ((repl,) * states) + data
                options["out_shardings"] = repl
            self._jitted[cache_key] = jax.jit(_quiet(traced), **options)
        return self._jitted[cache_key], sharding

    def accumulate(self, cached: bool) -> Callable[..., Any]:
        """The jitted `accumulate` body (the carry donated), called as `(carry, xs, ys, tail)`;
        with `cached`, as `(carry, x_all, y_all, rows, last_rows)`, gathered inside the step."""
        cache_key = ("accumulate", None, cached)
        if cache_key not in self._jitted:
            body = self.bodies["accumulate"]

            def traced(carry: Any, *data: Any) -> Any:
                if cached:
                    x_all, y_all, index, last = data
                    xs, ys = jnp.take(x_all, index, axis=0), jnp.take(y_all, index, axis=0)
                    tail = None
                    if last is not None:
                        tail = (jnp.take(x_all, last, axis=0), jnp.take(y_all, last, axis=0))
                else:
                    xs, ys, tail = data
                with self._precision():
                    return body(carry, xs, ys, tail)

            options: dict[str, Any] = {"donate_argnums": 0}
            if self.placement.mesh is not None:
                options["out_shardings"] = self.placement.replicated
            self._jitted[cache_key] = jax.jit(_quiet(traced), **options)
        return self._jitted[cache_key]

    def global_batch(self, array: Any, sharding: Any) -> Any:
        """`array` as a `step` function takes it: a global array across processes, else as is."""
        if self.placement.multi_process:
            return self.placement.global_batch(array, sharding)
        return array

    def put(self, array: Any, stacked: bool = False) -> Any:
        """A batch array (or None) placed with the data sharding when a mesh splits batches."""
        if array is None or self.placement.mesh is None:
            return array
        rows = array.shape[1 if stacked else 0]
        sharding = self.placement.batch_sharding(rows, stacked=stacked)
        if self.placement.multi_process:
            return self.placement.global_batch(np.asarray(array), sharding)
        return jax.device_put(array, sharding)
