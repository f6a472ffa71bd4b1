"""torch side of `benchmarks.layers`: crosstrain's module of each case against the torch layer
(on NCHW / NCL data where torch's layer is channels-first)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .layers import PARAMETER_FREE, VOCAB, inputs, spec


def SYNC(out: Any) -> None:  # noqa: N802 - the worker's sync hook; CPU torch is synchronous
    return None


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).contiguous()


def _ncl(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).contiguous()


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _call(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return module


def _first(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: module(x)[0]


def _self_attention(module: nn.MultiheadAttention) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: module(x, x, x, need_weights=False)[0]


# case -> (module, how it is called, layout of its input, its name in the table)
NATIVE: dict[str, Callable[[], tuple[nn.Module, Any, Any, str]]] = {
    "dense": lambda: (nn.Linear(128, 128), _call, _same, "nn.Linear"),
    "conv1d": lambda: (nn.Conv1d(128, 128, 3, padding=1), _call, _ncl, "nn.Conv1d (NCL)"),
    "conv2d": lambda: (nn.Conv2d(16, 16, 3, padding=1), _call, _nchw, "nn.Conv2d (NCHW)"),
    "conv2d_transpose": lambda: (
        nn.ConvTranspose2d(16, 16, 3, stride=2),
        _call,
        _nchw,
        "nn.ConvTranspose2d (NCHW)",
    ),  # fmt: skip
    "batchnorm": lambda: (
        nn.BatchNorm2d(16, eps=1e-3, momentum=0.01),
        _call,
        _nchw,
        "nn.BatchNorm2d (NCHW)",
    ),  # fmt: skip
    "layernorm": lambda: (nn.LayerNorm(128, eps=1e-3), _call, _same, "nn.LayerNorm"),
    "rmsnorm": lambda: (nn.RMSNorm(128, eps=1e-6), _call, _same, "nn.RMSNorm"),
    "attention": lambda: (
        nn.MultiheadAttention(128, 4, batch_first=True),
        _self_attention,
        _same,
        "nn.MultiheadAttention (SDPA)",
    ),  # fmt: skip
    "lstm": lambda: (nn.LSTM(128, 128, batch_first=True), _first, _same, "nn.LSTM"),
    "gru": lambda: (nn.GRU(128, 128, batch_first=True), _first, _same, "nn.GRU"),
    "embedding": lambda: (nn.Embedding(VOCAB, 128), _call, _same, "nn.Embedding"),
    "maxpool2d": lambda: (nn.MaxPool2d(2), _call, _nchw, "nn.MaxPool2d (NCHW)"),
    "avgpool2d": lambda: (nn.AvgPool2d(2), _call, _nchw, "nn.AvgPool2d (NCHW)"),
    "gelu": lambda: (nn.GELU(), _call, _same, "nn.GELU"),
}


def _step(
    module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> Callable[[], None]:
    """One training-mode forward and the backward of `sum(y * g)` into the parameters and x."""
    module.train()
    params = list(module.parameters())
    if x.is_floating_point():
        x.requires_grad_(True)
    with torch.no_grad():
        g = torch.randn_like(forward(x))

    def step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        forward(x).backward(g)

    return step


def steps(name: str) -> tuple[dict[str, Callable[[], None]], str]:
    """The crosstrain and native steps of a case, and the native layer's name."""
    import crosstrain as ct

    torch.manual_seed(0)
    data = torch.from_numpy(inputs(name))
    ours = ct.build(spec(name), backend="torch").native_model
    if name in PARAMETER_FREE:
        ours = ours.layers[0]
    module, call, layout, label = NATIVE[name]()
    pair = {
        "crosstrain": _step(ours, ours, data.clone()),
        "native": _step(module, call(module), layout(data.clone())),
    }
    return pair, label
