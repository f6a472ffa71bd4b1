"""A spec's model as flax nnx modules, with canonical names for every variable.

Data stays channels-last, as in the spec, which is also XLA's native convolution layout, so
every canonical layout (Dense `(in, out)`, Conv `HWIO`/`WIO`) is the native one and state
conversion is a rename. Containers (the model, Sequential, Residual) keep their children in an
`nnx.Dict` called `layers`, keyed by canonical child name; a variable's canonical name is its
nnx path with those `layers` steps removed (`canonical_name`). Trainable parameters are
`nnx.Param`, BatchNorm's moving statistics `nnx.BatchStat`.

Every module is called as `module(x, train=..., key=...)`; `key` is a JAX PRNG key (or None
outside training) from which each Dropout derives its own stream with `fold_in(key, index)`,
or, with `model.dropout_masks: shared`, the int32 key of `crosstrain.nn.dropout.call_key`.

Each layer is built by the route `crosstrain.nn.layers.layer_route` picks: the layer's own
`Layer.jax_module(input_shape) -> nnx.Module` (its variables are named after the layer's
canonical parameters, a `/` in a name becomes a sub-module, it is called as `module(x)`, and it
gets its initial values from core like every other layer), the class that `LAYER_BUILDERS`
names in this module, or `ArrayLayer` around an array-API `forward`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from crosstrain.errors import UnsupportedFeature
from crosstrain.nn.dropout import name_salt, shared_dropout
from crosstrain.nn.layers import Layer, Shape, as_pair, child_name, layer_route, same_padding
from crosstrain.nn.model import ModelSpec, frozen_params
from flax import nnx
from jax import Array

from .array_layer import ArrayLayer
from .plugin import LAYER_BUILDERS, NATIVE_METHOD

Path = tuple[Any, ...]
Key = Array | None
"""A PRNG key, or None outside training."""

ACTIVATIONS: dict[str | None, Callable[[Array], Array]] = {
    None: lambda x: x,
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "gelu": partial(jax.nn.gelu, approximate=False),
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softmax": partial(jax.nn.softmax, axis=-1),
    "silu": jax.nn.silu,
}


class Frozen(nnx.Variable):
    """A parameter of a layer with `trainable: false`: kept with the model's other non-trainable
    state (no gradient, no optimizer slots), still canonical state."""


class _Build:
    """What module constructors share: initial values by canonical name, Dropout numbering."""

    def __init__(
        self,
        values: dict[str, np.ndarray],
        shared_masks: bool = False,
        frozen: frozenset[str] = frozenset(),
    ):
        self.values = values
        self.dropouts = 0
        self.shared_masks = shared_masks
        self.frozen = frozen

    def param(self, name: str, kind: type[nnx.Variable] = nnx.Param) -> nnx.Variable:
        if kind is nnx.Param and name in self.frozen:
            kind = Frozen  # not an nnx.Param: outside the gradient and the optimizer
        return kind(jnp.asarray(self.values[name], dtype=jnp.float32))

    def next_dropout(self) -> int:
        self.dropouts += 1
        return self.dropouts - 1


def _pads(
    spatial: Iterable[int], window: Iterable[int], strides: Iterable[int], padding: str
) -> tuple[tuple[int, int], ...]:
    if padding == "valid":
        return tuple((0, 0) for _ in window)
    return tuple(same_padding(n, k, s) for n, k, s in zip(spatial, window, strides, strict=True))


class Dense(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.kernel = build.param(f"{name}/kernel")
        self.bias = build.param(f"{name}/bias") if layer.use_bias else None
        self.activation = layer.activation

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        y = x @ self.kernel[...]
        if self.bias is not None:
            y = y + self.bias[...]
        return ACTIVATIONS[self.activation](y)


class Conv(nnx.Module):
    """Conv1D (`NWC`, kernel `WIO`) and Conv2D (`NHWC`, kernel `HWIO`) with Keras padding."""

    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.kernel = build.param(f"{name}/kernel")
        self.bias = build.param(f"{name}/bias") if layer.use_bias else None
        two_d = layer.type == "Conv2D"
        window = as_pair(layer.kernel_size) if two_d else (layer.kernel_size,)
        self.strides = as_pair(layer.strides) if two_d else (layer.strides,)
        self.pads = _pads(shape[:-1], window, self.strides, layer.padding)
        self.dims = ("NHWC", "HWIO", "NHWC") if two_d else ("NWC", "WIO", "NWC")
        self.activation = layer.activation

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        y = jax.lax.conv_general_dilated(
            x, self.kernel[...], self.strides, self.pads, dimension_numbers=self.dims
        )
        if self.bias is not None:
            y = y + self.bias[...]
        return ACTIVATIONS[self.activation](y)


class Pool2D(nnx.Module):
    """MaxPool2D / AvgPool2D; with `same` padding, padded cells never win or count (Keras)."""

    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        pool = as_pair(layer.pool_size)
        strides = as_pair(layer.strides) if layer.strides is not None else pool
        self.kind = "max" if layer.type == "MaxPool2D" else "avg"
        self.window, self.strides = (1, *pool, 1), (1, *strides, 1)
        self.pads = ((0, 0), *_pads(shape[:2], pool, strides, layer.padding), (0, 0))

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        if self.kind == "max":
            return jax.lax.reduce_window(
                x, -jnp.inf, jax.lax.max, self.window, self.strides, self.pads
            )
        total = jax.lax.reduce_window(x, 0.0, jax.lax.add, self.window, self.strides, self.pads)
        ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
        count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, self.window, self.strides, self.pads)
        return total / count


class GlobalAvgPool(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        pass

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def _normalise(x: Array, mean: Array, var: Array, gamma: Array, beta: Array, eps: float) -> Array:
    """`(x - mean) / sqrt(var + eps) * gamma + beta` as one multiply by `rsqrt(var + eps) *
    gamma`: a full-size division (and its gradient) cost BatchNorm 1.9x flax's forward+backward
    on CPU (`python -m benchmarks.layers`)."""
    return (x - mean) * (jax.lax.rsqrt(var + eps) * gamma) + beta


class BatchNorm(nnx.Module):
    """Keras BatchNorm over every axis but the last; statistics always in float32."""

    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.gamma = build.param(f"{name}/gamma")
        self.beta = build.param(f"{name}/beta")
        self.moving_mean = build.param(f"{name}/moving_mean", nnx.BatchStat)
        self.moving_variance = build.param(f"{name}/moving_variance", nnx.BatchStat)
        self.momentum, self.epsilon = layer.momentum, layer.epsilon

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        x32 = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean, var = jnp.mean(x32, axis=axes), jnp.var(x32, axis=axes)
            m = self.momentum
            self.moving_mean[...] = self.moving_mean[...] * m + jax.lax.stop_gradient(mean) * (
                1.0 - m
            )
            self.moving_variance[...] = self.moving_variance[...] * m + jax.lax.stop_gradient(
                var
            ) * (1.0 - m)
        else:
            mean, var = self.moving_mean[...], self.moving_variance[...]
        gamma, beta = self.gamma[...].astype(jnp.float32), self.beta[...].astype(jnp.float32)
        return _normalise(x32, mean, var, gamma, beta, self.epsilon).astype(x.dtype)


class LayerNorm(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.gamma = build.param(f"{name}/gamma")
        self.beta = build.param(f"{name}/beta")
        self.epsilon = layer.epsilon

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        x32 = x.astype(jnp.float32)
        mean, var = jnp.mean(x32, axis=-1, keepdims=True), jnp.var(x32, axis=-1, keepdims=True)
        gamma, beta = self.gamma[...].astype(jnp.float32), self.beta[...].astype(jnp.float32)
        return _normalise(x32, mean, var, gamma, beta, self.epsilon).astype(x.dtype)


class Dropout(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.rate = layer.rate
        self.index = build.next_dropout()
        self.salt = name_salt(name) if build.shared_masks else None

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        if not train or self.rate == 0.0:
            return x
        if key is None:
            raise ValueError("Dropout in training needs a PRNG key")
        if self.salt is not None:
            return shared_dropout(jnp, x, key, self.salt, self.rate)
        keep = jax.random.bernoulli(jax.random.fold_in(key, self.index), 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))


class Embedding(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.embeddings = build.param(f"{name}/embeddings")

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return jnp.take(self.embeddings[...], x.astype(jnp.int32), axis=0)


class Flatten(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        pass

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return x.reshape(x.shape[0], -1)


class Reshape(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.target = tuple(layer.output_shape(shape))

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return x.reshape(x.shape[0], *self.target)


class Activation(nnx.Module):
    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self.activation = layer.activation

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        return ACTIVATIONS[self.activation](x)


class _Projection(nnx.Module):
    def __init__(self, name: str, use_bias: bool, build: _Build):
        self.kernel = build.param(f"{name}/kernel")
        self.bias = build.param(f"{name}/bias") if use_bias else None

    def __call__(self, x: Array) -> Array:
        y = x @ self.kernel[...]
        return y + self.bias[...] if self.bias is not None else y


class Sequential(nnx.Module):
    """Children in order, in `self.layers` keyed by canonical child name.

    A third party's module (listed in `self.plain`) is called as `module(x)`.
    """

    def __init__(self, layer: Any, shape: Shape, name: str, build: _Build):
        self._adopt(list(layer.layers), shape, f"{name}/" if name else "", build)
        self.residual = getattr(layer, "type", "") == "Residual"

    def _adopt(self, layers: list[Layer], shape: Shape, prefix: str, build: _Build) -> None:
        order, plain, modules = [], [], {}
        for index, layer in enumerate(layers):
            name = child_name(index, layer)
            modules[name], native = _module(layer, shape, prefix + name, build)
            order.append(name)
            if not native:
                plain.append(name)
            shape = layer.output_shape(shape)
        self.order, self.plain, self.layers = tuple(order), tuple(plain), nnx.Dict(modules)

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        y = x
        for child in self.order:
            module = self.layers[child]
            y = module(y) if child in self.plain else module(y, train=train, key=key)
        return x + y if self.residual else y


def table_builder(entry: str) -> Any:
    """The module class a `LAYER_BUILDERS` entry names: `Class` in this module, `module.Class`
    in that module of this package."""
    module, _, name = entry.rpartition(".")
    if not module:
        return globals()[name]
    return getattr(importlib.import_module(f".{module}", __package__), name)


def _module(layer: Layer, shape: Shape, name: str, build: _Build) -> tuple[nnx.Module, bool]:
    """The module for a layer, and whether it is one of ours (False: a plugin's `jax_module`)."""
    route = layer_route(layer, LAYER_BUILDERS, NATIVE_METHOD)
    if route == "table":
        return table_builder(LAYER_BUILDERS[layer.type])(layer, shape, name, build), True
    if route == "array":
        return ArrayLayer(layer, shape, name, build), True
    if route is None:
        raise UnsupportedFeature(
            "jax", f"layer {layer.type} (no jax_module and no array-API forward)"
        )
    module = layer.jax_module(tuple(shape))
    if any(n.startswith(f"{name}/") for n in build.frozen):
        raise UnsupportedFeature(
            "jax", f"trainable: false on plugin layer {layer.type} ({name}) built by jax_module"
        )
    for path, variable in nnx.to_flat_state(nnx.state(module)):
        full = f"{name}/{'/'.join(str(p) for p in path)}"
        if full in build.values:
            variable[...] = jnp.asarray(build.values[full], dtype=jnp.float32)
    return module, False


class Model(Sequential):
    """The whole model of a spec: a Sequential at the root (canonical prefix empty)."""

    def __init__(self, model: ModelSpec, values: dict[str, np.ndarray]):
        build = _Build(values, model.dropout_masks == "shared", frozen_params(model))
        if model.is_graph:
            from .graph import Graph

            self.graph = Graph(model, build, _module)
            self.order, self.plain, self.layers = (), (), nnx.Dict({})
        else:
            self.graph = None
            self._adopt(list(model.layers), tuple(model.input_shape), "", build)
        self.residual = False
        self.uses_rng = build.dropouts > 0

    def __call__(self, x: Array, train: bool = False, key: Key = None) -> Array:
        if self.graph is not None:
            return self.graph(x, train=train, key=key)
        return super().__call__(x, train=train, key=key)


def canonical_name(path: Path) -> str:
    """`('layers', 'residual_2', 'layers', 'dense_0', 'kernel')` → `residual_2/dense_0/kernel`
    (a graph's `('graph', 'layers', 'head', 'kernel')` → `head/kernel`)."""
    if path[:1] == ("graph",):
        path = path[1:]
    parts, index = [], 0
    while index < len(path):
        if path[index] == "layers" and index + 1 < len(path):
            index += 1
        parts.append(str(path[index]))
        index += 1
    return "/".join(parts)


def flat_names(state: nnx.State) -> dict[str, Path]:
    """Canonical name → nnx path of every variable in `state`."""
    return {canonical_name(path): tuple(path) for path, _ in nnx.to_flat_state(state)}


def nest(flat: dict[str, Any], paths: dict[str, Path]) -> dict[Any, Any]:
    """A pure nested dict (what `nnx.merge` takes) from canonical name → array."""
    tree: dict[Any, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = paths[name]
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def unnest(tree: dict[Any, Any], names: dict[Path, str]) -> dict[str, Any]:
    """Canonical name → array from a pure nested dict (the inverse of `nest`)."""
    flat: dict[str, Any] = {}

    def visit(node: Any, path: Path) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                visit(child, (*path, key))
        else:
            flat[names[path]] = node

    visit(tree, ())
    return flat
