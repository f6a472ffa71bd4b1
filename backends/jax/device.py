"""Where a JAX run executes: accelerator, devices, mesh, precision, multi-host start.

`--devices N` on one accelerator is data parallel on a one-axis `Mesh` named `data`: batches
are split along it (`NamedSharding(mesh, P("data"))`), parameters and optimizer state are
replicated (`P()`), and XLA inserts the gradient all-reduce.

Several processes: when a cluster environment is present (`JAX_COORDINATOR_ADDRESS` with
`JAX_NUM_PROCESSES`/`JAX_PROCESS_ID` or `WORLD_SIZE`/`RANK`, or a SLURM / Open MPI job with more
than one task), `jax.distributed.initialize` is called before the devices are listed, so the
mesh spans every process's devices. Each process runs the same trainer on the same global
batches and contributes its own devices' rows and its copy of the replicated state
(`jax.make_array_from_callback`). `crosstrain fit --devices N` on a machine whose one process
sees fewer than N devices (CPU) starts N such processes itself (`JaxBackend.launch`,
`crosstrain.train.workers`); tests/backends/test_jax_multiprocess.py runs two on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from crosstrain.errors import CrosstrainError, UnsupportedFeature
from crosstrain.output import native_stdout_silenced
from crosstrain.train.workers import DISTRIBUTED_WORKER_ENV
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .plugin import cluster_environment

BACKEND = "jax"
ACCELERATOR_PLATFORM = {"cpu": "cpu", "cuda": "gpu", "tpu": "tpu"}
"""crosstrain accelerator name → JAX platform name."""


def coordinator() -> tuple[str, int, int] | None:
    """`(address, processes, process id)` from `JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES`
    and `JAX_PROCESS_ID` (or `WORLD_SIZE` and `RANK`, which our launcher and torchrun set);
    None when the coordinator is not given (SLURM and Open MPI are then detected by JAX)."""
    env = os.environ
    address = env.get("JAX_COORDINATOR_ADDRESS")
    processes = env.get("JAX_NUM_PROCESSES") or env.get("WORLD_SIZE")
    process_id = env.get("JAX_PROCESS_ID") or env.get("RANK")
    if not address:
        return None
    if processes is None or process_id is None:
        raise CrosstrainError(
            f"JAX_COORDINATOR_ADDRESS={address} is set, but not the number of processes and "
            "this one's index: set JAX_NUM_PROCESSES and JAX_PROCESS_ID (or WORLD_SIZE and RANK)"
        )
    return address, int(processes), int(process_id)


def maybe_initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize` once when a cluster environment is present."""
    if not cluster_environment():
        return False
    if not jax.distributed.is_initialized():
        given = coordinator()
        if given is None:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(*given)
        os.environ[DISTRIBUTED_WORKER_ENV] = "1"  # the command line ends without finalization
        if jax.devices()[0].platform == "cpu":
            with native_stdout_silenced():
                _open_collectives()
    return True


def _open_collectives() -> None:
    """One sum across every process's devices: gloo connects the processes on the first
    collective and prints `[Gloo] Rank r is connected to ...` on stdout each time it does;
    done here, silenced, the training steps reuse the connection quietly."""
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("all",))
    ones = jax.make_array_from_callback(
        (len(devices),), NamedSharding(mesh, PartitionSpec("all")), lambda _: np.ones(1, np.int32)
    )
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(ones)
    total.block_until_ready()


def found_accelerators() -> list[str]:
    """Accelerators JAX can use here: `cpu` always, then `cuda` and `tpu` when they have devices."""
    found = ["cpu"]
    for accelerator in ("cuda", "tpu"):
        try:
            present = bool(jax.devices(ACCELERATOR_PLATFORM[accelerator]))
        except RuntimeError:
            present = False
        if present:
            found.append(accelerator)
    return found


def select_devices(accelerator: str, count: int) -> list[Any]:
    """The first `count` devices of the accelerator's platform (`auto`: JAX's default platform).

    Raises:
        CrosstrainError: the accelerator is absent, or has fewer than `count` devices.
    """
    maybe_initialize_distributed()
    if accelerator == "auto":
        devices = jax.devices()
    elif accelerator in ACCELERATOR_PLATFORM:
        try:
            devices = jax.devices(ACCELERATOR_PLATFORM[accelerator])
        except RuntimeError:
            raise CrosstrainError(
                f"accelerator {accelerator!r} not found. Available: {', '.join(found_accelerators())}"
            ) from None
    else:
        raise UnsupportedFeature(
            BACKEND, f"accelerator {accelerator!r}", sorted(ACCELERATOR_PLATFORM)
        )
    if len(devices) < count:
        platform = devices[0].platform if devices else accelerator
        hint = (
            f" (`crosstrain fit SPEC --devices {count}` starts one process per device; in one "
            f"process on CPU set XLA_FLAGS=--xla_force_host_platform_device_count={count})"
            if platform == "cpu"
            else ""
        )
        raise CrosstrainError(f"{count} devices requested but {platform} has {len(devices)}{hint}")
    return list(devices[:count])


@dataclass(frozen=True)
class Precision:
    """How a precision setting maps onto JAX.

    Attributes:
        name: the spec's precision.
        compute_dtype: dtype parameters and float inputs are cast to for the forward pass.
        matmul_precision: `jax.default_matmul_precision` while tracing (`highest`: true
            float32 on GPU/TPU too, for parity with the reference; a no-op on CPU).
    """

    name: str
    compute_dtype: Any
    matmul_precision: str | None


PRECISIONS = {
    "32": Precision("32", jnp.float32, "highest"),
    "bf16-mixed": Precision("bf16-mixed", jnp.bfloat16, None),
}


def precision_policy(precision: str) -> Precision:
    """The policy for a precision; raises UnsupportedFeature for one JAX does not run here."""
    if precision not in PRECISIONS:
        raise UnsupportedFeature(BACKEND, f"precision {precision!r}", sorted(PRECISIONS))
    return PRECISIONS[precision]


class Placement:
    """Puts the training state and batches on the run's devices (one, or a data mesh)."""

    def __init__(self, devices: list[Any]):
        self.devices = devices
        self.mesh = Mesh(np.array(devices), ("data",)) if len(devices) > 1 else None
        if self.mesh is not None:
            self.replicated: Any = NamedSharding(self.mesh, PartitionSpec())
        else:
            self.replicated = jax.sharding.SingleDeviceSharding(devices[0])
        self.multi_process = jax.process_count() > 1
        here = jax.process_index()
        self.local_device = next(d for d in devices if d.process_index == here)
        """This process's first device of the run: where the initial state is made."""

    @property
    def size(self) -> int:
        return len(self.devices)

    def batch_sharding(self, rows: int, stacked: bool = False) -> Any:
        """Data-axis sharding for a batch of `rows` (replicated when it does not divide evenly)."""
        if self.mesh is None or rows % self.size:
            return self.replicated
        return NamedSharding(
            self.mesh, PartitionSpec(None, "data") if stacked else PartitionSpec("data")
        )

    def put_state(self, tree: Any) -> Any:
        """Copies arrays onto the devices (replicated); the copies are owned by the program, so
        donating them never touches a caller's buffer."""

        def own(array: Any) -> Any:
            return (
                jnp.array(array, copy=True)
                if isinstance(array, jax.Array)
                else np.array(array, copy=True)
            )

        if self.multi_process:  # every process holds the same values: each gives its copy
            return jax.tree.map(lambda a: self.global_batch(np.asarray(a), self.replicated), tree)
        return jax.device_put(jax.tree.map(own, tree), self.replicated)

    def global_batch(self, array: np.ndarray, sharding: Any) -> Any:
        """A batch as the jitted step takes it: numpy on one process, a global array across hosts."""
        if not self.multi_process:
            return array
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


XLA_DETERMINISTIC = "--xla_gpu_deterministic_ops=true"
"""The XLA flag `trainer.deterministic` adds: deterministic reductions/scatters on GPU (XLA on
CPU is deterministic already)."""


def deterministic_xla() -> None:
    """Adds `XLA_DETERMINISTIC` to `XLA_FLAGS`. XLA reads the variable when its GPU backend
    starts, so it takes effect when the fit is the process's first JAX computation (the
    command line; a notebook that already ran JAX on the GPU must set it itself)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_DETERMINISTIC}".strip()
