"""A spec's model as one `nn.Module`, with a map from every canonical name to its tensor.

Each layer is built by the route `crosstrain.nn.layers.layer_route` picks: the layer's own
`torch_module(input_shape)` (see `plugin_module`), the module class that `LAYER_BUILDERS`
names in `layers.py`, or `ArrayLayer` around an array-API `forward`.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from crosstrain.errors import UnsupportedFeature
from crosstrain.nn.dropout import host_call_key, name_salt
from crosstrain.nn.initializers import native_name
from crosstrain.nn.layers import Layer, ParamSpec, Shape, layer_route
from crosstrain.nn.model import LayerNode, ModelSpec, frozen_params, node_params, plan
from torch import nn

from . import layers as builders
from .array_layer import ArrayLayer
from .layers import Sequential
from .plugin import LAYER_BUILDERS, NATIVE_METHOD


@dataclass
class ParamRef:
    """Where one canonical parameter lives in the torch model.

    Attributes:
        name: canonical name (`residual_2/dense_0/kernel`).
        module: the module that owns the tensor.
        attr: the tensor's attribute name on `module` (a Parameter or a buffer).
        layout: `same`, `linear` (canonical `(in, out)`), `conv1d` (`WIO`) or `conv2d` (`HWIO`).
        trainable: whether the optimizer updates it.
        spec: the layer's declaration (shape, initialiser); None for a native model.
    """

    name: str
    module: nn.Module
    attr: str
    layout: str
    trainable: bool
    spec: ParamSpec | None = None

    @property
    def tensor(self) -> torch.Tensor:
        return getattr(self.module, self.attr)


def plugin_module(layer: Layer, input_shape: Shape, factory: dict[str, Any]) -> nn.Module:
    """The torch module of a layer type registered by a third-party plugin.

    The layer class defines `torch_module(self, input_shape) -> nn.Module`. The module takes
    and returns channels-last batches like the numpy `forward`. Its canonical parameters are
    found through an optional `canonical` mapping (canonical name → (attribute path, layout));
    without one, canonical `a/b` is the attribute path `a.b`, in the canonical layout.
    Non-trainable canonical parameters should be buffers.
    """
    return layer.torch_module(tuple(input_shape)).to(**factory)


def _resolve(module: nn.Module, path: str) -> tuple[nn.Module, str]:
    *owners, attr = path.split(".")
    for owner in owners:
        module = getattr(module, owner)
    return module, attr


def table_builder(entry: str) -> Any:
    """The module class a `LAYER_BUILDERS` entry names: `Class` in layers.py, `module.Class`
    in that module of this package."""
    module, _, name = entry.rpartition(".")
    return getattr(importlib.import_module(f".{module}", __package__) if module else builders, name)


def _layer_module(node: LayerNode, refs: list[ParamRef], factory: dict[str, Any]) -> nn.Module:
    layer = node.layer
    route = layer_route(layer, LAYER_BUILDERS, NATIVE_METHOD)
    if node.tie is not None:
        from .graph import TiedDense

        module = TiedDense(layer, node.input_shape, factory)
    elif route == "native":
        module = plugin_module(layer, node.input_shape, factory)
    elif route == "table":
        builder = table_builder(LAYER_BUILDERS[layer.type])
        if issubclass(builder, Sequential):
            return builder([_layer_module(child, refs, factory) for child in node.children])
        module = builder(layer, node.input_shape, factory)
        if isinstance(module, builders.Dropout):
            module.salt = name_salt(node.name)
    elif route == "array":
        module = ArrayLayer(layer, node.input_shape, factory)
    else:
        raise UnsupportedFeature(
            "torch",
            f"layer type {layer.type!r} (no torch_module and no array-API forward)",
            sorted(LAYER_BUILDERS),
        )
    mapping = getattr(module, "canonical", {})
    for pname, pspec in node_params(node).items():
        path, layout = mapping.get(pname, (pname.replace("/", "."), "same"))
        owner, attr = _resolve(module, path)
        refs.append(ParamRef(f"{node.name}/{pname}", owner, attr, layout, pspec.trainable, pspec))
    return module


def build_module(
    model: ModelSpec, device: torch.device, dtype: torch.dtype
) -> tuple[nn.Module, list[ParamRef]]:
    """The whole model as one `nn.Module` (uninitialised) plus its canonical parameter map.

    Args:
        model: the spec's model section.
        device: where the parameters are allocated.
        dtype: parameter dtype (float32, float64 or bfloat16).

    Returns:
        `(module, refs)` with refs in canonical order (`crosstrain.nn.model.param_specs`).
    """
    refs: list[ParamRef] = []
    factory = {"device": device, "dtype": dtype}
    if model.is_graph:
        from .graph import build_graph

        module = build_graph(model, plan(model), _layer_module, refs, factory)
    else:
        module = Sequential([_layer_module(node, refs, factory) for node in plan(model)])
    frozen = frozen_params(model)
    for ref in refs:
        if ref.name in frozen:  # `trainable: false`: no gradient, left out of the optimizer
            ref.trainable = False
            if isinstance(ref.tensor, nn.Parameter):
                ref.tensor.requires_grad_(False)
    return module, refs


class DropoutKey:
    """With `model.dropout_masks: shared`: the int32 key tensor every Dropout of `module` reads,
    filled before each training forward from the seed, the forwards run so far (`calls`) and
    the process rank (`crosstrain.nn.dropout.call_key`).
    """

    def __init__(self, module: nn.Module, seed: int, rank: int, device: torch.device):
        self.seed, self.rank, self.calls = seed, rank, 0
        self.tensor = torch.zeros((), dtype=torch.int32, device=device)
        for sub in module.modules():
            if isinstance(sub, builders.Dropout):
                sub.key = self.tensor

    def advance(self) -> None:
        """Sets the key of the next training forward."""
        self.tensor.fill_(host_call_key(self.seed, self.calls, self.rank))
        self.calls += 1


@torch.no_grad()
def native_init(refs: list[ParamRef]) -> None:
    """Initialises every parameter on its device with the declared distribution (torch's RNG)."""
    for ref in refs:
        tensor, spec = ref.tensor, ref.spec
        init = native_name(spec.init) if spec is not None else None
        if init is None:
            continue  # core draws it (crosstrain.nn.model.core_drawn)
        if init == "zeros":
            tensor.zero_()
        elif init == "ones":
            tensor.fill_(1.0)
        elif init == "glorot_uniform":
            limit = math.sqrt(6.0 / (spec.fans[0] + spec.fans[1]))
            tensor.uniform_(-limit, limit)
        else:
            tensor.uniform_(-0.05, 0.05)


def native_refs(module: nn.Module) -> list[ParamRef]:
    """The canonical map of a hand-written module: its `state_dict` names, torch layouts."""
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    refs = []
    for name, tensor in module.state_dict(keep_vars=True).items():
        owner, attr = _resolve(module, name)
        refs.append(ParamRef(name, owner, attr, "same", id(tensor) in trainable))
    return refs
