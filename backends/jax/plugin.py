"""`JaxBackend`: what the JAX backend declares, and `build` (the only place JAX is imported)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from crosstrain.errors import BackendUnavailable, UnsupportedFeature
from crosstrain.nn.layers import supported_layer_types
from crosstrain.plugin.protocol import Backend, Capabilities, RunEnv
from crosstrain.plugin.registry import package_version

from .export import FORMATS as EXPORT_FORMATS

if TYPE_CHECKING:
    from crosstrain.spec.schema import Spec

    from .program import JaxProgram

LAYER_BUILDERS: dict[str, str] = {
    "Dense": "Dense",
    "Conv1D": "Conv",
    "Conv2D": "Conv",
    "MaxPool2D": "Pool2D",
    "AvgPool2D": "Pool2D",
    "GlobalAvgPool": "GlobalAvgPool",
    "BatchNorm": "BatchNorm",
    "LayerNorm": "LayerNorm",
    "Dropout": "Dropout",
    "Embedding": "Embedding",
    "Flatten": "Flatten",
    "Reshape": "Reshape",
    "ReLU": "Activation",
    "GELU": "sequence.GELU",
    "SiLU": "Activation",
    "Tanh": "Activation",
    "Sigmoid": "Activation",
    "Softmax": "Activation",
    "Residual": "Sequential",
    "Add": "graph.Merge",
    "Concatenate": "graph.Merge",
    "Multiply": "graph.Merge",
    "Sequential": "Sequential",
    "MultiHeadSelfAttention": "sequence.Attention",
    "PositionEmbedding": "sequence.PositionEmbedding",
    "RMSNorm": "sequence.RMSNorm",
    "GatedMLP": "sequence.GatedMLP",
    "LSTM": "recurrent.LSTM",
    "GRU": "recurrent.GRU",
    "MaxPool1D": "pooling.Pool1D",
    "AvgPool1D": "pooling.Pool1D",
    "GlobalMaxPool": "pooling.GlobalMaxPool",
    "UpSampling2D": "pooling.UpSampling2D",
    "Conv2DTranspose": "pooling.Conv2DTranspose",
}
"""The JAX backend's layer table: layer type → its nnx module class in `model.py`
(`module.Class`: in that module of this package).

The supported layer types are these keys plus every registered layer with a `jax_module`
method or an array-API `forward` (`crosstrain.nn.layers.layer_route`)."""
NATIVE_METHOD = "jax_module"
REQUIRED = ("jax", "flax", "optax")


class JaxBackend(Backend):
    """The JAX backend (flax nnx + optax). See `crosstrain.plugin.protocol.Backend`."""

    name = "jax"
    extra = "jax"

    def is_available(self) -> tuple[bool, str]:
        """Whether jax, flax and optax can be imported (checked without importing them)."""
        missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"{', '.join(missing)} not installed"
        return True, ""

    def version(self) -> str | None:
        """jax's version from package metadata."""
        return package_version("jax")

    def capabilities(self) -> Capabilities:
        """Declared support: every layer of `LAYER_BUILDERS`, every array-API or `jax_module`
        layer, fp32 and bf16-mixed, CPU/CUDA/TPU, fused steps."""
        return Capabilities(
            lr_scale=True,
            layers=supported_layer_types(LAYER_BUILDERS, NATIVE_METHOD),
            precisions=frozenset({"32", "bf16-mixed"}),
            accelerators=frozenset({"cpu", "cuda", "tpu"}),
            strategies=frozenset({"auto", "data_parallel"}),
            steps_per_execution=True,
            accumulate_grad_batches=True,
            compile=True,
            native_models=False,
            grad_norm=True,
            exports=EXPORT_FORMATS,
            shared_dropout_masks=True,
        )

    def accelerators_found(self) -> list[str]:
        """Platforms JAX sees, with device counts (imports JAX)."""
        from .device import found_accelerators

        return found_accelerators()

    def launch(self, spec: Spec, argv: list[str], backend: str = "") -> int | None:
        """Starts `crosstrain <argv>` in `trainer.devices` processes on this machine, joined by
        `jax.distributed` (CPU collectives through gloo), when the spec asks for more devices
        than this process has (`device.processes_needed`) and no launcher started it.

        Returns:
            The workers' exit status, or None when this process trains by itself (one device,
            or a one-process mesh over enough local devices).
        """
        if not processes_needed(spec.trainer.devices, spec.trainer.accelerator):
            return None
        from crosstrain.train.workers import free_port, launch_workers

        coordinator = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}"}
        return launch_workers(spec.trainer.devices, argv, coordinator)

    def explain(self, spec: Spec, env: RunEnv) -> dict[str, str]:
        """Its lines of the fit plan (`crosstrain fit --explain`), from `explain.py`."""
        from .explain import explain

        return explain(spec, env)

    def build(self, spec: Spec, env: RunEnv) -> JaxProgram:
        """A JaxProgram for the spec.

        Raises:
            UnsupportedFeature: the spec asks for something not in `capabilities()`, or a native model.
            BackendUnavailable: jax, flax or optax is missing.
        """
        if env.native_model is not None:
            raise UnsupportedFeature(self.name, "native models (fit(native_module, ...))")
        self.capabilities().check(spec, self.name)
        if env.precision not in self.capabilities().precisions:
            raise UnsupportedFeature(
                self.name, f"precision {env.precision!r}", sorted(self.capabilities().precisions)
            )
        available, reason = self.is_available()
        if not available:
            raise BackendUnavailable(self.name, reason, self.extra)
        from .program import JaxProgram

        return JaxProgram(spec, env)


ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu", "jax_rocm60_plugin")
"""jaxlib plugins that give one process several accelerator devices (then one process drives
them all through a mesh, as JAX recommends)."""


def processes_needed(devices: int, accelerator: str) -> bool:
    """Whether `devices` asks this command to start worker processes: more than one device, no
    launcher or cluster around this process, and a CPU run whose one process has fewer devices
    (one, unless `XLA_FLAGS=--xla_force_host_platform_device_count=N`). Decided without
    importing JAX: a process that forks workers must not hold JAX's threads."""
    import os
    import re

    from crosstrain.train.workers import launcher_environment

    if devices == 1 or launcher_environment() is not None or cluster_environment():
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "")
    on_cpu = accelerator == "cpu" or (
        accelerator == "auto"
        and (
            platforms.startswith("cpu")
            or not any(map(importlib.util.find_spec, ACCELERATOR_PLUGINS))
        )
    )
    if not on_cpu:
        return False
    forced = re.search(
        r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", "")
    )
    return (int(forced.group(1)) if forced else 1) < devices


def cluster_environment() -> bool:
    """Whether a cluster started this process as one of several JAX processes:
    `JAX_COORDINATOR_ADDRESS`, or a SLURM / Open MPI job with more than one task (no JAX import)."""
    import os

    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID"):
        return True
    return int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1
