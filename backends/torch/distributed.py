"""Data parallel training on torch.distributed: the process group, each rank's shard of a
global batch, and the launch of workers through torchrun.

Each process receives the same global batch from the trainer (core draws the seeded order) and
keeps its contiguous share, as `numpy.array_split` would cut it. The loss of a rank is scaled
by `world_size * local_rows / global_rows`, so DDP's gradient average equals the gradient of
the mean loss over the global batch even when the batch does not divide evenly.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from crosstrain.errors import CrosstrainError, UnsupportedFeature
from crosstrain.train.workers import DISTRIBUTED_WORKER_ENV, launcher_environment, supervise

BACKEND = "torch"
DATA_PARALLEL = ("ddp", "fsdp")


@dataclass(frozen=True)
class Shard:
    """This process's place in a data-parallel run.

    Attributes:
        rank: global rank (0 writes logs and checkpoints).
        world_size: number of processes.
        local_rank: rank on this node; picks the CUDA device.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def rows(self, n: int) -> slice:
        """The contiguous rows of an `n`-row global batch that this rank trains on."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def launch_environment() -> Shard | None:
    """This process's shard as a launcher set it (`crosstrain.api.launcher_environment`:
    torchrun's or SLURM's variables); None when no launcher started this process."""
    found = launcher_environment()
    return None if found is None else Shard(*found)


def _destroy() -> None:
    """Leaves the process group once every rank is done (a rank leaving early aborts gloo)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def setup(strategy: str, devices: int, accelerator: str) -> Shard:
    """Joins (or starts) the process group for `strategy`; a single process for `auto`.

    `auto` means `ddp` when several devices are asked for or a launcher started several
    processes (as in Lightning).

    Args:
        strategy: `auto`, `ddp` or `fsdp`.
        devices: processes per node asked for (`trainer.devices`).
        accelerator: `auto`, `cpu` or `cuda` (gloo on CPU, nccl on CUDA).

    Raises:
        UnsupportedFeature: a data-parallel strategy on an accelerator other than CPU or CUDA.
        CrosstrainError: more than one device asked for, but no launcher started the processes.
    """
    found = launch_environment()
    if strategy == "auto" and (devices > 1 or (found is not None and found.world_size > 1)):
        strategy = "ddp"
    if strategy not in DATA_PARALLEL:
        return Shard()
    if accelerator not in ("auto", "cpu", "cuda"):
        raise UnsupportedFeature(
            BACKEND, f"strategy {strategy!r} on {accelerator}", ["cpu", "cuda"]
        )
    if found is None:
        if devices == 1:
            return Shard()
        raise CrosstrainError(
            f"strategy {strategy!r} with devices={devices} needs one process per device: run "
            f"`crosstrain fit SPEC --strategy {strategy} --devices {devices}` (it starts them with "
            f"torchrun) or start your script with `torchrun --nproc_per_node={devices}`"
        )
    cuda = accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(found.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if cuda else "gloo", rank=found.rank, world_size=found.world_size
        )
        atexit.register(_destroy)
        os.environ[DISTRIBUTED_WORKER_ENV] = "1"  # the command line ends without finalization
    return found


def shard_fully(module: torch.nn.Module, device: torch.device, world_size: int) -> None:
    """FSDP2 in place: each top-level layer that owns parameters becomes one `fully_shard` unit
    (its parameters are all-gathered just before its forward and backward, then freed), and the
    root gathers whatever is left. Parameters become DTensors sharded on dim 0 across ranks;
    gradients are reduce-scattered (averaged), as DDP averages them.

    Buffers (BatchNorm statistics) are not sharded and not synchronised: each rank keeps its own,
    rank 0's go into checkpoints.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    for layer in _layers(module):
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh)
    fully_shard(module, mesh=mesh)


def _layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The top-level layers of a model, looking through ModuleList/ModuleDict containers."""
    found = []
    for child in module.children():
        if isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            found += _layers(child)
        else:
            found.append(child)
    return found


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over all ranks (in place; returned for chaining)."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def torchrun_command(devices: int, argv: Sequence[str]) -> list[str]:
    """The command that runs `crosstrain <argv>` in `devices` processes on this node."""
    return [
        sys.executable,
        "-m",
        "crosstrain.backends.torch.torchrun",  # torchrun without its ChildFailedError traceback
        "--standalone",
        f"--nproc_per_node={devices}",
        "-m",
        "crosstrain.cli",
        *argv,
    ]


def launch(devices: int, argv: Sequence[str]) -> int:
    """Runs `crosstrain <argv>` under torchrun with `devices` workers; their exit status.

    torchrun runs in a session of its own and this process forwards SIGINT and SIGTERM to it
    once (`crosstrain.train.workers.supervise`), so Ctrl-C in a terminal and `kill <pid>` of
    this launcher both reach every worker exactly once; after a signal the status is 128 + its
    number (130 for SIGINT, 143 for SIGTERM). On Linux torchrun also receives SIGTERM when this
    launcher dies without forwarding anything (SIGKILL, OOM killer), so the workers still save
    an interrupt checkpoint and stop. Each worker's error is printed once.
    """
    return supervise([(torchrun_command(devices, argv), {})])
