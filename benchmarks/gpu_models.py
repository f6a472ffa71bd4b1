"""The two models of the GPU throughput benchmark: a neutral spec each, and the same network
hand-written in idiomatic PyTorch for the native loop.

- `cnn`: a ResNet-style CNN on 32×32×3 images, 10 classes. A 3×3 conv stem, then three stages
  (width, 2×width, 4×width channels at 32², 16², 8²) of residual blocks `x + conv-BN-ReLU-conv-BN`
  followed by ReLU; a stage is entered through a 2×2 max pool and a 3×3 conv-BN-ReLU that
  widens the channels (the neutral `Residual` must keep the shape, so there are no projection
  shortcuts; every conv is stride 1 with symmetric padding, so native `padding=1` is exactly
  Keras `same`). Global average pool, Dense. Convs have no bias (BatchNorm follows).
- `transformer`: token embedding, pre-norm encoder layers (`x + MHSA(LN(x))`,
  `x + Dense(GELU(Dense(LN(x))))`), final LayerNorm, mean over the sequence, Dense to 10
  classes. There is no positional embedding in the neutral vocabulary; attention cost does not
  depend on it.

The native modules list their tensors in the canonical order of the spec, so
`load_canonical` copies crosstrain's seeded initial values into them (Dense kernels transposed,
Conv kernels HWIO → OIHW): both sides start from identical parameters. BatchNorm and LayerNorm
use the spec's epsilon 1e-3 and BatchNorm torch momentum 0.01 (Keras momentum 0.99).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tasks import Task

EPSILON = 1e-3
"""BatchNorm/LayerNorm epsilon of the neutral layers (Keras's)."""


@dataclass(frozen=True)
class CnnSize:
    """ResNet-style CNN: base `width`, residual `blocks` per stage (three stages)."""

    width: int = 64
    blocks: int = 2
    classes: int = 10


@dataclass(frozen=True)
class TransformerSize:
    """Encoder: `dim` features, `heads` attention heads, `depth` layers, `sequence` tokens."""

    vocab: int = 8192
    dim: int = 512
    heads: int = 8
    depth: int = 6
    sequence: int = 256
    classes: int = 10


FULL = {"cnn": CnnSize(), "transformer": TransformerSize()}
TINY = {
    "cnn": CnnSize(width=8, blocks=1),
    "transformer": TransformerSize(vocab=256, dim=32, heads=2, depth=1, sequence=16),
}
DEFAULT_BATCH = {"cnn": 512, "transformer": 64}
MODELS = tuple(FULL)


# -- neutral specs ---------------------------------------------------------------------------


def _conv_bn(filters: int) -> list[dict[str, Any]]:
    conv = {"type": "Conv2D", "filters": filters, "kernel_size": 3, "padding": "same"}
    return [{**conv, "use_bias": False}, {"type": "BatchNorm"}]


def cnn_layers(size: CnnSize) -> list[dict[str, Any]]:
    """The neutral layer list of the ResNet-style CNN."""
    layers = [*_conv_bn(size.width), {"type": "ReLU"}]
    for stage in range(3):
        filters = size.width * 2**stage
        if stage:
            layers += [{"type": "MaxPool2D", "pool_size": 2}, *_conv_bn(filters), {"type": "ReLU"}]
        for _ in range(size.blocks):
            body = [*_conv_bn(filters), {"type": "ReLU"}, *_conv_bn(filters)]
            layers += [{"type": "Residual", "layers": body}, {"type": "ReLU"}]
    return [*layers, {"type": "GlobalAvgPool"}, {"type": "Dense", "units": size.classes}]


def transformer_layers(size: TransformerSize) -> list[dict[str, Any]]:
    """The neutral layer list of the encoder classifier."""
    layers: list[dict[str, Any]] = [
        {"type": "Embedding", "vocab_size": size.vocab, "dim": size.dim}
    ]
    attention = {
        "type": "MultiHeadSelfAttention",
        "num_heads": size.heads,
        "head_dim": size.dim // size.heads,
    }
    mlp = [
        {"type": "LayerNorm"},
        {"type": "Dense", "units": 4 * size.dim, "activation": "gelu"},
        {"type": "Dense", "units": size.dim},
    ]
    for _ in range(size.depth):
        layers += [
            {"type": "Residual", "layers": [{"type": "LayerNorm"}, attention]},
            {"type": "Residual", "layers": mlp},
        ]
    return [
        *layers,
        {"type": "LayerNorm"},
        {"type": "GlobalAvgPool"},
        {"type": "Dense", "units": size.classes},
    ]


def make_task(model: str, batch: int, steps: int, epochs: int, tiny: bool) -> Task:
    """The benchmark `Task` of a model: its spec layers, input shape, data and run length."""
    size = (TINY if tiny else FULL)[model]
    if isinstance(size, CnnSize):
        title = f"ResNet-style CNN, width {size.width}, {size.blocks} block(s)/stage, 32×32×3"
        return Task(model, title, tuple(cnn_layers(size)), (32, 32, 3), batch, steps, epochs)
    title = (
        f"transformer, {size.depth} layer(s), dim {size.dim}, {size.heads} heads, "
        f"{size.sequence} tokens, vocab {size.vocab}"
    )
    layers = tuple(transformer_layers(size))
    shape = (size.sequence,)
    return Task(model, title, layers, shape, batch, steps, epochs, lr=3e-4, vocab=size.vocab)


# -- native modules --------------------------------------------------------------------------


def _native_conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout, eps=EPSILON, momentum=0.01),
    ]


class NativeBlock(nn.Module):
    """`relu(x + BN(conv(relu(BN(conv(x))))))`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_native_conv_bn(channels, channels),
            nn.ReLU(inplace=True),
            *_native_conv_bn(channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class NativeResNet(nn.Module):
    """The CNN on NCHW input (use channels-last memory for speed)."""

    def __init__(self, size: CnnSize) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_native_conv_bn(3, size.width), nn.ReLU(inplace=True)]
        channels = size.width
        for stage in range(3):
            filters = size.width * 2**stage
            if stage:
                layers += [nn.MaxPool2d(2), *_native_conv_bn(channels, filters), nn.ReLU(True)]
            layers += [NativeBlock(filters) for _ in range(size.blocks)]
            channels = filters
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, size.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class NativeAttention(nn.Module):
    """Multi-head self-attention with separate projections and `scaled_dot_product_attention`."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
        )
        self.output = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape

        def split(projection: nn.Linear) -> torch.Tensor:
            return projection(x).view(batch, seq, self.heads, -1).transpose(1, 2)

        mixed = F.scaled_dot_product_attention(
            split(self.query), split(self.key), split(self.value)
        )
        return self.output(mixed.transpose(1, 2).reshape(batch, seq, dim))


class NativeEncoderLayer(nn.Module):
    """Pre-norm encoder layer: attention residual, then GELU MLP residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPSILON)
        self.attention = NativeAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=EPSILON)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class NativeTransformer(nn.Module):
    """Embedding, encoder layers, LayerNorm, mean over tokens, classifier."""

    def __init__(self, size: TransformerSize) -> None:
        super().__init__()
        self.embed = nn.Embedding(size.vocab, size.dim)
        self.layers = nn.ModuleList(
            NativeEncoderLayer(size.dim, size.heads) for _ in range(size.depth)
        )
        self.norm = nn.LayerNorm(size.dim, eps=EPSILON)
        self.head = nn.Linear(size.dim, size.classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h).mean(dim=1))


def native_model(model: str, tiny: bool) -> nn.Module:
    """The hand-written module of a benchmark model (torch's default init, see `load_canonical`)."""
    size = (TINY if tiny else FULL)[model]
    return NativeResNet(size) if isinstance(size, CnnSize) else NativeTransformer(size)


@torch.no_grad()
def load_canonical(module: nn.Module, params: dict[str, np.ndarray]) -> None:
    """Copies canonical values (`crosstrain.nn.model.init_params`) into a native module in order.

    Raises:
        ValueError: the module's tensors do not line up with the canonical names and shapes.
    """
    targets = [
        (name, tensor)
        for name, tensor in module.state_dict().items()
        if not name.endswith("num_batches_tracked")
    ]
    if len(targets) != len(params):
        raise ValueError(
            f"native module has {len(targets)} tensors, the spec {len(params)} parameters"
        )
    for (canonical, value), (native, tensor) in zip(params.items(), targets, strict=True):
        array = torch.from_numpy(np.ascontiguousarray(value))
        if canonical.endswith("kernel"):
            array = array.permute(3, 2, 0, 1) if array.ndim == 4 else array.T
        if array.shape != tensor.shape:
            raise ValueError(
                f"canonical {canonical} {tuple(array.shape)} does not fit native {native} "
                f"{tuple(tensor.shape)}"
            )
        tensor.copy_(array)
