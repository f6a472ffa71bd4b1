"""The model section of a spec, and what core derives from it without any framework:
the layer tree with shapes, canonical parameter names, seeded initialisation, numpy forward."""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from crosstrain.errors import SpecError, SpecIssue
from crosstrain.nn.dropout import DropoutMasks
from crosstrain.nn.graph import InputSpec, NodeSpec
from crosstrain.nn.initializers import draw, native_name
from crosstrain.nn.layers import AnyLayer, Embedding, Layer, ParamSpec, Shape, child_name
from crosstrain.nn.layers.composite import sequence_forward
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from pydantic_core import PydanticCustomError

DEFAULT_MAX_PARAMETERS = 2**31
"""`model.max_parameters` by default: 2^31 elements (8 GiB of float32)."""
MAX_LAYER_DEPTH = 32
"""How deep composite layers (Residual, Sequential) may nest inside each other."""
MAX_LAYERS = 100_000
"""The most layers a model may have, nested ones included (validation is linear in it)."""


def _layer_tree_problem(layers: Any, path: str) -> str | None:
    """What is wrong with the shape of the layer tree, or None: more than MAX_LAYERS layers, or a
    layer list nested more than MAX_LAYER_DEPTH deep (named by its path).

    Works on raw data (`{type: Residual, layers: [...]}`) and on Layer objects, iteratively.
    """
    stack, count = [(layers, path, 0)], 0
    while stack:
        items, where, depth = stack.pop()
        if not isinstance(items, (list, tuple)):
            continue
        if depth >= MAX_LAYER_DEPTH:
            return (
                f"layers nest more than {MAX_LAYER_DEPTH} levels deep at {where}; flatten the model"
            )
        count += len(items)
        if count > MAX_LAYERS:
            return f"more than {MAX_LAYERS:,} layers (counting nested ones); refused"
        for index, item in enumerate(items):
            inner = item.get("layers") if isinstance(item, dict) else getattr(item, "layers", None)
            stack.append((inner, f"{where}[{index}].layers", depth + 1))
    return None


class ModelSpec(BaseModel):
    """`model:` in a spec: per-sample input shape and the layers, applied in order; or a graph
    (`nodes`, with named `inputs` or one `input_shape`, and `outputs`; crosstrain.nn.graph)."""

    model_config = ConfigDict(extra="forbid")

    input_shape: tuple[PositiveInt, ...] | None = None
    layers: list[AnyLayer] | None = Field(None, min_length=1)
    inputs: dict[str, InputSpec] | None = Field(
        None, description="named model inputs of a graph (instead of input_shape)"
    )
    nodes: list[NodeSpec] | None = Field(
        None, min_length=1, description="the model as a graph of named nodes (instead of layers)"
    )
    outputs: str | list[str] | dict[str, str] | None = Field(
        None, description="the graph's output node (default: the last node)"
    )
    input_dtype: Literal["float32", "int64"] | None = None
    init: Literal["seed", "native"] = "seed"
    dropout_masks: DropoutMasks = Field(
        "native",
        description="'shared': every backend draws the same dropout masks (crosstrain.nn.dropout)",
    )
    max_parameters: PositiveInt = Field(
        DEFAULT_MAX_PARAMETERS,
        description="refuse a model with more parameter elements than this, before allocating",
    )
    weights: str | None = Field(
        None,
        description="start from these weights (must fit exactly): a .safetensors file (torch "
        "state_dicts converted), a crosstrain checkpoint directory, a .npz or a .keras file; "
        "never a pickle",
    )
    weights_map: dict[str, str | None] | None = Field(
        None,
        description="renames for `weights`/`init_from`: {their name (a regular expression over "
        "the whole name): our name (may use \\1), or null to drop it}",
    )
    weights_layout: Literal["auto", "crosstrain", "torch", "keras"] | None = Field(
        None,
        description="how to read the names and layouts of `weights` (default auto: torch for "
        "a state_dict's `.weight`/`.bias` names, keras for a .keras file, else crosstrain)",
    )
    init_from: str | None = Field(
        None,
        description="start from the matching tensors (same name and shape) of another run's "
        "checkpoint or weights file; the others are initialised from the seed",
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_huge_trees(cls, data: Any) -> Any:
        """Too many layers, or layers nested too deep, are refused before they are validated
        (validating them recurses and takes time in proportion)."""
        if isinstance(data, dict):
            for key in ("layers", "nodes"):
                problem = _layer_tree_problem(data.get(key), f"model.{key}")
                if problem is not None:
                    raise PydanticCustomError("layer_tree", "{problem}", {"problem": problem})
        return data

    @model_validator(mode="after")
    def _chain_or_graph(self) -> ModelSpec:
        if (self.layers is None) == (self.nodes is None):
            raise ValueError("give either `layers` (a chain) or `nodes` (a graph)")
        if self.layers is not None and self.input_shape is None:
            raise ValueError("a chain of `layers` needs `input_shape`")
        if self.layers is not None and (self.inputs is not None or self.outputs is not None):
            raise ValueError("`inputs` and `outputs` belong to a graph (`nodes`)")
        if self.nodes is not None and (self.inputs is None) == (self.input_shape is None):
            raise ValueError("a graph takes either `inputs` (named) or `input_shape` (one input)")
        if self.inputs is not None and not self.inputs:
            raise ValueError("`inputs` names at least one input")
        return self

    @property
    def is_graph(self) -> bool:
        return self.nodes is not None

    @model_validator(mode="after")
    def _weights_options(self) -> ModelSpec:
        if self.weights is not None and self.init_from is not None:
            raise PydanticCustomError(
                "weights", "give model.weights (exact fit) or model.init_from (what fits), not both"
            )
        for pattern in self.weights_map or {}:
            try:
                re.compile(pattern)
            except re.error as err:
                raise PydanticCustomError(
                    "weights_map",
                    "model.weights_map: {pattern!r} is not a regular expression ({err})",
                    {"pattern": pattern, "err": str(err)},
                ) from None
        return self

    def layer_nodes(self) -> list[LayerNode]:
        """Every layer of the tree, parents before their children, with shapes and paths (what
        a backend's capability check walks without importing this module)."""
        return list(walk(plan(self)))

    @property
    def resolved_input_dtype(self) -> str:
        """`int64` when the first layer is an Embedding, else `float32`, unless given."""
        if self.is_graph:
            from crosstrain.nn.graph import graph_inputs

            return next(iter(graph_inputs(self).values())).dtype
        if self.input_dtype:
            return self.input_dtype
        return "int64" if isinstance(self.layers[0], Embedding) else "float32"


@dataclass
class LayerNode:
    """One layer placed in the model: canonical name, spec path, shapes, children; in a graph
    also the names it reads, the node whose layer it shares and the Embedding it is tied to
    (a merge layer's `input_shape` is the tuple of its inputs' shapes)."""

    name: str
    path: str
    layer: Layer
    input_shape: Shape
    output_shape: Shape
    children: list[LayerNode] = field(default_factory=list)
    inputs: tuple[str, ...] = ()
    shares: str | None = None
    tie: str | None = None


def _plan(layers: list[Layer], shape: Shape, prefix: str, path: str) -> list[LayerNode]:
    nodes = []
    for index, layer in enumerate(layers):
        name = f"{prefix}{child_name(index, layer)}"
        where = f"{path}[{index}]"
        if getattr(layer, "merge", False):
            raise SpecError(
                SpecIssue(where, f"{layer.type} merges several inputs: use it in `model.nodes`")
            )
        children = (
            _plan(layer.children(), shape, name + "/", where + ".layers")
            if layer.children()
            else []
        )
        try:
            out = tuple(layer.output_shape(tuple(shape)))
        except ValueError as err:
            raise SpecError(
                SpecIssue(where, f"{layer.type} cannot take input shape {tuple(shape)}: {err}")
            ) from None
        nodes.append(LayerNode(name, where, layer, tuple(shape), out, children))
        shape = out
    return nodes


def plan(model: ModelSpec) -> list[LayerNode]:
    """The layer tree with shapes; raises SpecError naming the layer whose shapes do not fit."""
    if model.is_graph:
        from crosstrain.nn.graph import plan_graph

        nodes = plan_graph(model)
    else:
        nodes = _plan(list(model.layers), tuple(model.input_shape), "", "model.layers")
    counts = Counter(n.name for n in walk(nodes))
    duplicated = sorted(name for name, count in counts.items() if count > 1)
    if duplicated:
        shown = duplicated[:10] + (
            [f"... {len(duplicated) - 10} more"] if len(duplicated) > 10 else []
        )
        raise SpecError(SpecIssue("model.layers", f"layer names must be unique, repeated: {shown}"))
    total = sum(
        math.prod(spec.shape) for node in walk(nodes) for spec in node_params(node).values()
    )
    if total > model.max_parameters:
        raise SpecError(
            SpecIssue(
                "model",
                f"{total:,} parameters, more than model.max_parameters ({model.max_parameters:,}); "
                "make the layers smaller or raise model.max_parameters",
            )
        )
    return nodes


def walk(nodes: list[LayerNode]):
    """Every node, depth first, parents before children."""
    for node in nodes:
        yield node
        yield from walk(node.children)


def output_node(model: ModelSpec, nodes: list[LayerNode] | None = None) -> LayerNode:
    """The node whose output is the model's (a chain's last layer, a graph's output node)."""
    nodes = plan(model) if nodes is None else nodes
    if not model.is_graph:
        return nodes[-1]
    from crosstrain.nn.graph import output_names

    name = output_names(model)[0]
    return next(node for node in nodes if node.name == name)


def output_shape(model: ModelSpec) -> Shape:
    return output_node(model).output_shape


def node_params(node: LayerNode) -> dict[str, ParamSpec]:
    """The canonical parameters `node` owns (a graph's sharing node none, a tied Dense no
    kernel; `crosstrain.nn.graph.node_params`)."""
    from crosstrain.nn.graph import node_params as graph_node_params

    return graph_node_params(node)


def param_specs(model: ModelSpec) -> dict[str, ParamSpec]:
    """Canonical parameters of the whole model: `<layer>/<param>` → ParamSpec, in layer order;
    those of a frozen layer (`trainable: false`, or inside one) are not trainable."""
    specs: dict[str, ParamSpec] = {}
    frozen = frozen_params(model)
    for node in walk(plan(model)):
        for pname, spec in node_params(node).items():
            name = f"{node.name}/{pname}"
            specs[name] = replace(spec, trainable=False) if name in frozen else spec
    return specs


def _frozen(nodes: list[LayerNode], parent_frozen: bool, out: set[str]) -> None:
    for node in nodes:
        frozen = parent_frozen or node.layer.trainable is False
        if frozen:
            out.update(f"{node.name}/{p}" for p in node_params(node))
        _frozen(node.children, frozen, out)


def frozen_params(model: ModelSpec) -> frozenset[str]:
    """Canonical names of the parameters of frozen layers (`trainable: false` on the layer or on
    a composite around it): no gradient, no optimizer update or slots, still checkpointed."""
    out: set[str] = set()
    _frozen(plan(model), False, out)
    return frozenset(out)


def core_drawn(model: ModelSpec) -> dict[str, ParamSpec]:
    """With `model.init: native`, the parameters a backend does not draw itself because their
    initialiser is not one of the four it knows (core draws those from the seed)."""
    return {n: s for n, s in param_specs(model).items() if native_name(s.init) is None}


def _initial_value(name: str, spec: ParamSpec, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    try:
        return draw(spec.init, spec.shape, rng, spec.fans)
    except ValueError as err:
        raise SpecError(SpecIssue("model", f"cannot initialise {name}: {err}")) from None


def init_params(model: ModelSpec, seed: int, names: Any = None) -> dict[str, np.ndarray]:
    """Seeded float32 initial values for every canonical parameter (the same on every backend),
    or only for those in `names`.

    Each parameter draws from its own stream keyed by its name, so adding a layer does not
    change the others' initial values.
    """
    return {
        name: _initial_value(name, spec, seed)
        for name, spec in param_specs(model).items()
        if names is None or name in names
    }


def forward(
    model: ModelSpec,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    training: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Numpy reference forward of the whole model on a batch (a graph's: a dict, tuple or
    array of its inputs)."""
    if model.is_graph:
        from crosstrain.nn.graph import graph_forward

        return graph_forward(model, plan(model), params, x, training, rng)
    return sequence_forward(list(model.layers), params, x, training, rng)


def count_params(model: ModelSpec) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts."""
    specs = param_specs(model).values()
    trainable = sum(math.prod(s.shape) for s in specs if s.trainable)
    frozen = sum(math.prod(s.shape) for s in specs if not s.trainable)
    return trainable, frozen
