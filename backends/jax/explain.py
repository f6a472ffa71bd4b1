"""The jax backend's lines of the fit plan (`Backend.explain`): precision, compilation and
the device mesh, decided from the spec alone (no jax import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crosstrain.plugin.protocol import RunEnv
    from crosstrain.spec.schema import Spec

PRECISION = {
    "32": "float32, matmuls traced at 'highest' precision (true fp32 on GPU/TPU)",
    "64": "float64 parameters and math (jax_enable_x64)",
    "bf16-mixed": "bfloat16 compute, float32 parameters; norm statistics, softmax, loss in fp32",
    "bf16-true": "bfloat16 parameters and compute",
}


def processes_line(devices: int) -> str:
    """How a JAX run (jax or keras:jax) on several devices is laid out in processes."""
    return (
        f"{devices} on the command line, one per device, joined by jax.distributed "
        "(gloo on CPU) when this process sees fewer devices; else 1 process over "
        f"{devices} local devices (GPUs, XLA_FLAGS host device count)"
    )


def explain(spec: Spec, env: RunEnv) -> dict[str, str]:
    """Precision, execution and sharding of a jax fit."""
    k = spec.trainer.steps_per_execution
    lines = {
        "precision": f"{env.precision}: {PRECISION.get(env.precision, env.precision)}",
        "execution": "compiled: one jax.jit per step over the donated state (always)"
        + (f", {k} steps per call through lax.scan" if k > 1 else ""),
    }
    if env.devices > 1:
        lines["processes"] = processes_line(env.devices)
        lines["sharding"] = (
            f"mesh axis 'data' over {env.devices} devices: batches split with "
            "NamedSharding(P('data')), parameters and optimizer state replicated"
        )
    return lines
