"""The torch backend's lines of the fit plan (`Backend.explain`): processes, launcher,
precision, compilation and sharding, decided from the spec alone (no torch import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crosstrain.plugin.protocol import RunEnv
    from crosstrain.spec.schema import Spec

PRECISION = {
    "32": "float32 (matmul precision as trainer.matmul_precision, else torch's default)",
    "64": "float64 parameters and math",
    "16-mixed": "torch.autocast float16, float32 parameters, GradScaler (skipped steps counted)",
    "bf16-mixed": "torch.autocast bfloat16, float32 parameters and optimizer",
    "bf16-true": "bfloat16 parameters, optimizer slots and math",
}


def fsdp_units(spec: Spec) -> list[str]:
    """The top-level layers that own parameters, in model order: each is one `fully_shard`
    unit (`distributed.shard_fully`), then the root takes what is left."""
    from crosstrain.nn.model import param_specs

    if spec.model is None:
        return []
    return list(dict.fromkeys(name.split("/")[0] for name in param_specs(spec.model)))


def explain(spec: Spec, env: RunEnv) -> dict[str, str]:
    """Processes, launcher, precision, execution and sharding of a torch fit."""
    from crosstrain.train.workers import launcher_environment

    lines = {
        "precision": f"{env.precision}: {PRECISION.get(env.precision, env.precision)}",
        "execution": "torch.compile of the train and eval steps"
        if spec.trainer.compile
        else "eager (no torch.compile)",
    }
    strategy = "ddp" if env.strategy == "auto" and env.devices > 1 else env.strategy
    if env.devices == 1 and strategy == "auto":
        return lines
    group = "nccl on cuda, gloo on cpu"
    lines["processes"] = f"{env.devices}, one per device, in a torch.distributed group ({group})"
    if launcher_environment() is None:
        lines["launcher"] = (
            f"torchrun: `crosstrain fit` starts {env.devices} worker processes "
            "(crosstrain.backends.torch.torchrun)"
        )
    if strategy == "fsdp":
        units = fsdp_units(spec) if env.native_model is None else []
        shown = ", ".join(units) if units else "each top-level module with parameters"
        lines["sharding"] = (
            f"FSDP2 across {env.devices} ranks, units: {shown}, then the root; parameters and "
            "optimizer slots sharded on dim 0, gradients reduce-scattered"
        )
    else:
        lines["sharding"] = (
            f"DDP across {env.devices} ranks: parameters replicated, each rank takes its share "
            "of every global batch, gradients all-reduced (averaged)"
        )
    return lines
