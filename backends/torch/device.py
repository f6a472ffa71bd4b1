"""Where a torch run executes and in which number formats.

`select_device` turns the spec's accelerator (`auto|cpu|cuda|mps|tpu`) into a `torch.device`;
`precision_policy` turns the spec's precision into parameter dtype, autocast dtype and
whether a gradient scaler is needed.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from crosstrain.errors import BackendUnavailable, CrosstrainError, UnsupportedFeature

BACKEND = "torch"


def _xla_available() -> bool:
    return importlib.util.find_spec("torch_xla") is not None


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def found_accelerators() -> list[str]:
    """Accelerators usable in this process: `cpu` always, then `cuda`, `mps`, `tpu` if present."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if _mps_available():
        found.append("mps")
    if _xla_available():
        found.append("tpu")
    return found


def describe_accelerators() -> list[tuple[str, str, list[str]]]:
    """`(accelerator, device names, precisions)` for every accelerator found."""
    rows = [("cpu", platform.processor() or platform.machine(), supported_precisions("cpu"))]
    if torch.cuda.is_available():
        names = ", ".join(
            f"{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
        )
        precisions = supported_precisions("cuda")
        if not torch.cuda.is_bf16_supported():
            precisions = [p for p in precisions if not p.startswith("bf16")]
        rows.append(("cuda", names, precisions))
    if _mps_available():
        rows.append(("mps", "Apple GPU", supported_precisions("mps")))
    if _xla_available():
        rows.append(("tpu", "torch_xla (PJRT_DEVICE selects)", supported_precisions("xla")))
    return rows


def _xla_device() -> torch.device:
    try:
        import torch_xla
    except ImportError as err:
        raise BackendUnavailable(
            BACKEND, f"accelerator 'tpu' needs torch_xla ({err})", None
        ) from None
    if hasattr(torch_xla, "device"):
        return torch_xla.device()
    import torch_xla.core.xla_model as xm

    return xm.xla_device()


def select_device(accelerator: str) -> torch.device:
    """The device for an accelerator name.

    Args:
        accelerator: `auto` (cuda, else mps, else cpu), `cpu`, `cuda`, `mps` or `tpu`.

    Returns:
        The torch device (the current CUDA device for `cuda`).

    Raises:
        CrosstrainError: the accelerator is not present; the message lists what was found.
        BackendUnavailable: `tpu` was asked for but torch_xla is not installed.
    """
    if accelerator == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator == "tpu":
        if not _xla_available():
            raise BackendUnavailable(
                BACKEND, "accelerator 'tpu' needs torch_xla, which is not installed", None
            )
        return _xla_device()
    present = {"cuda": torch.cuda.is_available(), "mps": _mps_available()}
    if accelerator not in present:
        raise CrosstrainError(
            f"unknown accelerator {accelerator!r}; expected auto, cpu, cuda, mps or tpu"
        )
    if not present[accelerator]:
        raise CrosstrainError(
            f"accelerator {accelerator!r} not found. Available: {', '.join(found_accelerators())}"
        )
    if accelerator == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("mps")


@dataclass(frozen=True)
class PrecisionPolicy:
    """How one precision setting maps onto torch.

    Attributes:
        name: the spec's precision (`32`, `64`, `16-mixed`, `bf16-mixed`, `bf16-true`).
        param_dtype: dtype of parameters, optimizer slots and float inputs.
        autocast_dtype: dtype of autocast regions, or None for no autocast.
        loss_dtype: dtype the model output is cast to before loss and metrics.
        grad_scaler: whether a `torch.amp.GradScaler` scales the loss (16-mixed).
    """

    name: str
    param_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    loss_dtype: torch.dtype
    grad_scaler: bool

    def autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        """The autocast context for a forward pass on `device` (a no-op without autocast)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


PRECISIONS: dict[str, PrecisionPolicy] = {
    "32": PrecisionPolicy("32", torch.float32, None, torch.float32, False),
    "64": PrecisionPolicy("64", torch.float64, None, torch.float64, False),
    "bf16-mixed": PrecisionPolicy(
        "bf16-mixed", torch.float32, torch.bfloat16, torch.float32, False
    ),
    "16-mixed": PrecisionPolicy("16-mixed", torch.float32, torch.float16, torch.float32, True),
    "bf16-true": PrecisionPolicy("bf16-true", torch.bfloat16, None, torch.float32, False),
}


def precision_policy(precision: str, device: torch.device) -> PrecisionPolicy:
    """The policy for `precision` on `device`.

    Raises:
        UnsupportedFeature: unknown precision, or one the device cannot run (float64 on MPS/TPU).
    """
    if precision not in PRECISIONS:
        raise UnsupportedFeature(BACKEND, f"precision {precision!r}", sorted(PRECISIONS))
    if precision == "64" and device.type in ("mps", "xla"):
        raise UnsupportedFeature(
            BACKEND, f"precision '64' on {device.type}", sorted(set(PRECISIONS) - {"64"})
        )
    if precision == "16-mixed" and device.type == "xla":
        raise UnsupportedFeature(
            BACKEND, "precision '16-mixed' on xla (TPUs compute in bfloat16)", XLA_PRECISIONS
        )
    return PRECISIONS[precision]


XLA_PRECISIONS = ["32", "bf16-mixed", "bf16-true"]
MPS_PRECISIONS = ["32", "16-mixed", "bf16-mixed", "bf16-true"]


def supported_precisions(device_type: str) -> list[str]:
    """The precisions the backend runs on a device type (`cpu`, `cuda`, `mps`, `xla`)."""
    if device_type == "xla":
        return XLA_PRECISIONS
    if device_type == "mps":
        return MPS_PRECISIONS
    return sorted(PRECISIONS)


def configure_backends(trainer: Any, device: torch.device) -> None:
    """Applies `trainer.cudnn_benchmark` and `trainer.matmul_precision` where they are set.

    `matmul_precision` `high` or `medium` lets float32 matmuls and convolutions use TF32 on
    NVIDIA GPUs (`torch.set_float32_matmul_precision`, `torch.backends.cudnn.allow_tf32`);
    `highest` keeps full float32. Unset options leave torch's defaults alone.
    """
    benchmark = getattr(trainer, "cudnn_benchmark", None)
    if benchmark is not None:
        torch.backends.cudnn.benchmark = bool(benchmark)
    precision = getattr(trainer, "matmul_precision", None)
    if precision is not None:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = precision != "highest"
    if getattr(trainer, "deterministic", False):
        deterministic_torch()


def deterministic_torch() -> None:
    """`trainer.deterministic`: deterministic kernels or an error naming the op that has none
    (`torch.use_deterministic_algorithms`), cuBLAS's fixed workspace (`CUBLAS_WORKSPACE_CONFIG`,
    read when cuBLAS starts, so a user's own value wins) and no cuDNN autotuning."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def step_marker(device: torch.device) -> Callable[[], None] | None:
    """What ends one step on `device`: `torch_xla.sync` (or `xm.mark_step`) on XLA, else None."""
    if device.type != "xla":
        return None
    import torch_xla

    if hasattr(torch_xla, "sync"):
        return torch_xla.sync
    import torch_xla.core.xla_model as xm

    return xm.mark_step


def make_grad_scaler(policy: PrecisionPolicy, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for `16-mixed`, else None."""
    if not policy.grad_scaler:
        return None
    return torch.amp.GradScaler(device.type)
