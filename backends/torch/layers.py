"""One `nn.Module` per layer of the neutral vocabulary, on channels-last data.

Data stays channels-last (`NHWC`, `NLC`) between layers, as in the spec; convolutions and
pools look at it through a permuted view and permute their result back, which is free for
channels-last memory. Each module class says in `canonical` where a canonical parameter lives
(`"kernel": ("weight", "linear")`): the attribute and the layout conversion that `state.py`
applies. Every module is built as `Module(layer, input_shape, factory)` with `factory` the
device and dtype of its tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import array_api_compat.torch as array_api
import torch
import torch.nn.functional as F
from crosstrain.nn.dropout import shared_dropout
from crosstrain.nn.layers import Shape, as_pair, same_padding
from torch import nn


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


ACTIVATIONS: dict[str | None, Callable[[torch.Tensor], torch.Tensor]] = {
    None: _identity,
    "linear": _identity,
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softmax": partial(F.softmax, dim=-1),
    "silu": F.silu,
}


def _param(
    shape: tuple[int, ...], factory: dict[str, Any], channels_last: bool = False
) -> nn.Parameter:
    tensor = torch.empty(shape, **factory)
    if channels_last and tensor.device.type in ("cpu", "cuda"):
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return nn.Parameter(tensor)


def _optional_param(
    module: nn.Module, name: str, present: bool, shape: tuple[int, ...], factory: dict[str, Any]
) -> None:
    module.register_parameter(name, _param(shape, factory) if present else None)


class Dense(nn.Module):
    canonical = {"kernel": ("weight", "linear"), "bias": ("bias", "same")}

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.weight = _param((layer.units, input_shape[-1]), factory)
        _optional_param(self, "bias", layer.use_bias, (layer.units,), factory)
        self.activation = ACTIVATIONS[layer.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(F.linear(x, self.weight, self.bias))


def _same_pads(
    spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...], padding: str
) -> list[tuple[int, int]]:
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    return [same_padding(n, k, s) for n, k, s in zip(spatial, kernel, strides, strict=True)]


def _split_pads(pads: list[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(symmetric padding for the op, F.pad widths on channels-last data or None)."""
    if all(before == after for before, after in pads):
        return tuple(before for before, _ in pads), None
    widths: tuple[int, ...] = (0, 0)
    for before, after in reversed(pads):
        widths += (before, after)
    return (0,) * len(pads), widths


class Conv2D(nn.Module):
    canonical = {"kernel": ("weight", "conv2d"), "bias": ("bias", "same")}

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        kernel, strides = as_pair(layer.kernel_size), as_pair(layer.strides)
        self.weight = _param((layer.filters, input_shape[-1], *kernel), factory, channels_last=True)
        _optional_param(self, "bias", layer.use_bias, (layer.filters,), factory)
        self.strides = strides
        self.padding, self.widths = _split_pads(
            _same_pads(input_shape[:2], kernel, strides, layer.padding)
        )
        self.activation = ACTIVATIONS[layer.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.widths is not None:
            x = F.pad(x, self.widths)
        y = F.conv2d(x.permute(0, 3, 1, 2), self.weight, self.bias, self.strides, self.padding)
        return self.activation(y.permute(0, 2, 3, 1))


class Conv1D(nn.Module):
    canonical = {"kernel": ("weight", "conv1d"), "bias": ("bias", "same")}

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.weight = _param((layer.filters, input_shape[-1], layer.kernel_size), factory)
        _optional_param(self, "bias", layer.use_bias, (layer.filters,), factory)
        self.stride = layer.strides
        pads = _same_pads(input_shape[:1], (layer.kernel_size,), (layer.strides,), layer.padding)
        self.padding, self.widths = _split_pads(pads)
        self.activation = ACTIVATIONS[layer.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.widths is not None:
            x = F.pad(x, self.widths)
        y = F.conv1d(x.permute(0, 2, 1), self.weight, self.bias, self.stride, self.padding)
        return self.activation(y.permute(0, 2, 1))


class Pool2D(nn.Module):
    """MaxPool2D or AvgPool2D with Keras `same` padding (padded cells never count)."""

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.kind = "max" if layer.type == "MaxPool2D" else "avg"
        self.pool = as_pair(layer.pool_size)
        self.strides = as_pair(layer.strides) if layer.strides is not None else self.pool
        self.padding, self.widths = _split_pads(
            _same_pads(input_shape[:2], self.pool, self.strides, layer.padding)
        )
        self.register_buffer("count", None, persistent=False)
        if self.kind == "avg" and self.widths is not None:
            ones = F.pad(torch.ones((1, *input_shape[:2], 1), **factory), self.widths)
            self.count = F.avg_pool2d(ones.permute(0, 3, 1, 2), self.pool, self.strides).permute(
                0, 2, 3, 1
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            if self.widths is not None:
                x = F.pad(x, self.widths, value=-math.inf)
            y = F.max_pool2d(x.permute(0, 3, 1, 2), self.pool, self.strides, self.padding)
            return y.permute(0, 2, 3, 1)
        if self.widths is not None:
            y = F.avg_pool2d(F.pad(x, self.widths).permute(0, 3, 1, 2), self.pool, self.strides)
            return y.permute(0, 2, 3, 1) / self.count.to(y.dtype)
        y = F.avg_pool2d(
            x.permute(0, 3, 1, 2), self.pool, self.strides, self.padding, count_include_pad=False
        )
        return y.permute(0, 2, 3, 1)


class GlobalAvgPool(nn.Module):
    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.axes = tuple(range(1, len(input_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.axes)


class BatchNorm(nn.Module):
    """Keras BatchNorm over the last axis: `moving = moving * momentum + batch * (1 - momentum)`,
    with the biased batch variance, as Keras.

    Channels-last data of any rank is normalised as a `(rows, channels)` view by torch's fused
    `F.batch_norm`. Its running update is torch's (`unbiased` variance, momentum as the weight
    of the batch), so it runs on scratch buffers with momentum 1, which then hold the batch
    mean and unbiased variance; the Keras update of the moving statistics follows from them
    (variance scaled by `(n - 1) / n`) in two small in-place ops.
    """

    canonical = {
        "gamma": ("gamma", "same"),
        "beta": ("beta", "same"),
        "moving_mean": ("moving_mean", "same"),
        "moving_variance": ("moving_variance", "same"),
    }

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        channels = (input_shape[-1],)
        self.gamma, self.beta = _param(channels, factory), _param(channels, factory)
        self.register_buffer("moving_mean", torch.zeros(channels, **factory))
        self.register_buffer("moving_variance", torch.ones(channels, **factory))
        self.register_buffer("batch_mean", torch.zeros(channels, **factory), persistent=False)
        self.register_buffer("batch_variance", torch.ones(channels, **factory), persistent=False)
        self.momentum, self.epsilon = layer.momentum, layer.epsilon
        self.axes = tuple(range(len(input_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        count = rows.shape[0]
        if x.dtype != self.gamma.dtype or (self.training and count < 2):
            return self._unfused(x)
        if not self.training:
            y = F.batch_norm(
                rows, self.moving_mean, self.moving_variance, self.gamma, self.beta,
                False, 0.0, self.epsilon,
            )  # fmt: skip
            return y.view(x.shape)
        y = F.batch_norm(
            rows, self.batch_mean, self.batch_variance, self.gamma, self.beta,
            True, 1.0, self.epsilon,
        )  # fmt: skip
        with torch.no_grad():
            keep = self.momentum
            self.moving_mean.mul_(keep).add_(self.batch_mean, alpha=1.0 - keep)
            self.moving_variance.mul_(keep).add_(
                self.batch_variance, alpha=(1.0 - keep) * (count - 1) / count
            )
        return y.view(x.shape)

    def _unfused(self, x: torch.Tensor) -> torch.Tensor:
        """Parameters in another dtype than the data (mixed precision), or a training batch of
        one row (no unbiased variance): the same maths, op by op."""
        if self.training:
            var, mean = torch.var_mean(x, dim=self.axes, correction=0)
            with torch.no_grad():
                keep = self.momentum
                self.moving_mean.mul_(keep).add_(
                    mean.detach().to(self.moving_mean.dtype), alpha=1.0 - keep
                )
                self.moving_variance.mul_(keep).add_(
                    var.detach().to(self.moving_variance.dtype), alpha=1.0 - keep
                )
        else:
            mean, var = self.moving_mean.to(x.dtype), self.moving_variance.to(x.dtype)
        return (x - mean) * torch.rsqrt(var + self.epsilon) * self.gamma.to(x.dtype) + self.beta.to(
            x.dtype
        )


class LayerNorm(nn.Module):
    canonical = {"gamma": ("gamma", "same"), "beta": ("beta", "same")}

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.shape = (input_shape[-1],)
        self.gamma, self.beta = _param(self.shape, factory), _param(self.shape, factory)
        self.epsilon = layer.epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.gamma, self.beta, self.epsilon)


class Embedding(nn.Module):
    canonical = {"embeddings": ("weight", "same")}

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.weight = _param((layer.vocab_size, layer.dim), factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x if x.dtype in (torch.int64, torch.int32) else x.long(), self.weight)


class Dropout(nn.Module):
    """torch's own dropout, or with shared masks (`model.DropoutKey` sets `key` and `salt`)
    the mask of `crosstrain.nn.dropout`."""

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.rate = layer.rate
        self.key: torch.Tensor | None = None
        self.salt = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.rate or not self.training:
            return x
        if self.key is not None:
            return shared_dropout(array_api, x, self.key, self.salt, self.rate)
        return F.dropout(x, self.rate, True)


class Reshape(nn.Module):
    """Flatten and Reshape: the target per-sample shape is known from shape inference."""

    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.shape = tuple(layer.output_shape(input_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class Activation(nn.Module):
    def __init__(self, layer: Any, input_shape: Shape, factory: dict[str, Any]):
        super().__init__()
        self.name = type(layer).activation
        self.fn = ACTIVATIONS[self.name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class Sequential(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Residual(Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)
