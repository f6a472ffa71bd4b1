"""Models as graphs (`model.nodes`): named inputs, named nodes that read model inputs or
earlier nodes, shared layers, a Dense tied to an Embedding, and the numpy reference forward.

A graph is planned into the same `LayerNode`s as a chain (`crosstrain.nn.model.plan`), one per
node in the order listed, each with the names it reads (`inputs`), the node whose layer it uses
(`shares`) and the Embedding node whose table it projects with (`tie`). A node's canonical
parameters are `<node>/<param>` (`<node>/<child>/<param>` inside a Residual or Sequential), as
a chain's layer is `<layer name>/<param>`; a sharing node owns none, a tied Dense no kernel.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from crosstrain.errors import SpecError, SpecIssue, suggest
from crosstrain.nn.layers import Dense, Embedding, Layer, Shape
from crosstrain.nn.layers.composite import child_params, validate_layer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""Input and node names: identifiers (every framework accepts them as module/layer names)."""
SINGLE_INPUT = "input"
"""The name of the one model input of a graph given `model.input_shape`."""
NODE_KEYS = ("name", "inputs", "shares", "tie")
"""The keys of a node entry that are the graph's; the others are the layer's options."""


class InputSpec(BaseModel):
    """One named model input: the per-sample shape (`[]` for one value per sample) and dtype."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, ...] = Field(description="per-sample shape, without the batch axis")
    dtype: Literal["float32", "int64"] = Field("float32", description="`int64` for ids")

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        if any(size < 1 for size in shape):
            raise ValueError(f"sizes must be positive, got {list(shape)}")
        return shape


def _maybe_layer(value: Any, handler: Any) -> Layer | None:
    return None if value is None else validate_layer(value)


class NodeSpec(BaseModel):
    """One node of `model.nodes`: a layer (its options inline, `type: Dense, units: 8`) plus
    `name`, `inputs` (model inputs or earlier nodes; default: the previous node, or the one
    model input), `shares` (use that node's layer and parameters; give no `type`) and `tie`
    (a Dense projecting with that Embedding node's table, transposed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="the node's name (an identifier)")
    layer: Annotated[Any, WrapValidator(_maybe_layer)] = Field(
        None, description="the layer; in a spec its `type` and options are the node's own keys"
    )
    inputs: tuple[str, ...] | None = Field(
        None, description="model inputs or earlier nodes it reads (default: the previous node)"
    )
    shares: str | None = Field(
        None, description="an earlier node whose layer (and parameters) this node uses"
    )
    tie: str | None = Field(
        None, description="Dense only: an Embedding node whose table, transposed, is the kernel"
    )

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["properties"].pop("layer", None)
        schema["additionalProperties"] = True  # the layer's `type` and options
        return schema

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        """`{name, inputs, type, units ...}` → the node's keys plus `layer` from the rest."""
        if not isinstance(data, dict) or "layer" in data:
            return data
        node = {key: data[key] for key in NODE_KEYS if key in data}
        options = {key: value for key, value in data.items() if key not in NODE_KEYS}
        if isinstance(node.get("inputs"), str):
            node["inputs"] = [node["inputs"]]
        if options or "shares" not in node:
            node["layer"] = validate_layer(options)
        return node

    @model_validator(mode="after")
    def _layer_or_shares(self) -> NodeSpec:
        if self.shares is not None and self.layer is not None:
            raise ValueError("a node that `shares` another's layer gives no type or options")
        if self.tie is not None and not isinstance(self.layer, Dense):
            raise ValueError("`tie` is an option of a Dense node")
        return self

    @property
    def inline_layer(self) -> Layer | None:
        """The layer whose options the serialised node holds inline (`Spec.to_dict`)."""
        return self.layer

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any, info: Any) -> dict[str, Any]:
        """Serialised as written: the layer's options inline."""
        data = handler(self)
        layer = data.pop("layer", None) or {}
        options = {key: value for key, value in layer.items() if key != "name"}
        return {"name": data.pop("name"), **options, **data}


def parse_outputs(outputs: Any) -> list[str] | None:
    """`outputs` as a list of node names (None: the last node)."""
    if outputs is None:
        return None
    if isinstance(outputs, str):
        return [outputs]
    if isinstance(outputs, dict):
        return list(outputs.values())
    return list(outputs)


def graph_inputs(model: Any) -> dict[str, InputSpec]:
    """The model inputs of a graph in order: `model.inputs`, or the one input `input` of
    `model.input_shape` (int64 when an Embedding reads it, unless `model.input_dtype` says)."""
    if model.inputs is not None:
        return dict(model.inputs)
    dtype = model.input_dtype
    if dtype is None:
        readers = [n for n in model.nodes if SINGLE_INPUT in (n.inputs or (SINGLE_INPUT,))]
        dtype = "int64" if readers and isinstance(readers[0].layer, Embedding) else "float32"
    return {SINGLE_INPUT: InputSpec(shape=tuple(model.input_shape), dtype=dtype)}


def plan_graph(model: Any) -> list[Any]:
    """The nodes of a graph with shapes (`LayerNode`s in the order listed); raises SpecError
    naming the node and field of the first problem found."""
    from crosstrain.nn.model import LayerNode, _plan

    inputs = graph_inputs(model)
    shapes: dict[str, Any] = {name: tuple(spec.shape) for name, spec in inputs.items()}
    placed: dict[str, LayerNode] = {}
    later = {node.name: index for index, node in enumerate(model.nodes)}
    previous = next(iter(inputs)) if len(inputs) == 1 else None
    for index, spec in enumerate(model.nodes):
        where, name = f"model.nodes[{index}]", spec.name

        def fail(field: str, message: str, where: str = where, name: str = name) -> SpecError:
            return SpecError(SpecIssue(f"{where}.{field}", f"node {name!r}: {message}"))

        if name in shapes:
            first = next(i for i, n in enumerate(model.nodes) if n.name == name)
            kind = "a model input" if name in inputs else f"node {first}"
            raise fail("name", f"the name is already used by {kind}; names must be unique")
        reads = spec.inputs if spec.inputs is not None else ((previous,) if previous else ())
        if not reads:
            raise fail("inputs", f"say which of the model inputs {list(inputs)} it reads")
        for read in reads:
            if read in shapes:
                continue
            if read == name:
                raise fail("inputs", "reads its own output (a cycle); a node reads earlier nodes")
            if read in later:
                raise fail(
                    "inputs",
                    f"reads {read!r} before it is defined (node {later[read]}); nodes read model "
                    "inputs and earlier nodes only, so list them in order (a cycle cannot be "
                    "written)",
                )
            known = [*inputs, *placed]
            raise fail(
                "inputs",
                f"unknown input {read!r} (model inputs: {list(inputs)}, earlier nodes: "
                f"{list(placed)}){suggest(read, known)}",
            )
        layer, owner = spec.layer, None
        if spec.shares is not None:
            owner = placed.get(spec.shares)
            if owner is None:
                raise fail(
                    "shares",
                    f"{spec.shares!r} is not an earlier node{suggest(spec.shares, list(placed))}",
                )
            owner = placed[owner.shares] if owner.shares else owner
            layer = owner.layer
        in_shape = shapes[reads[0]] if len(reads) == 1 else tuple(shapes[r] for r in reads)
        if len(reads) > 1 and not getattr(layer, "merge", False):
            raise fail(
                "inputs",
                f"{layer.type} takes one input, got {len(reads)} (merge them first with Add, Concatenate or Multiply)",
            )
        try:
            out = tuple(layer.output_shape(in_shape))
        except ValueError as err:
            raise fail(
                "inputs", f"{layer.type} cannot take input shape {in_shape}: {err}"
            ) from None
        if owner is not None:
            mine = {k: p.shape for k, p in layer.params(in_shape).items()}
            theirs = {k: p.shape for k, p in layer.params(owner.input_shape).items()}
            if mine != theirs:
                raise fail(
                    "shares",
                    f"its input shape {in_shape} gives parameters {mine}, {owner.name!r} has {theirs}",
                )
        if spec.tie is not None:
            _check_tie(spec, in_shape, placed, fail)
        children = (
            _plan(layer.children(), in_shape, f"{name}/", f"{where}.layers")
            if layer.children() and owner is None
            else []
        )
        placed[name] = LayerNode(
            name,
            where,
            layer,
            in_shape,
            out,
            children,
            tuple(reads),
            owner.name if owner is not None else None,
            spec.tie,
        )
        shapes[name] = out
        previous = name
    _check_outputs(model, placed)
    return list(placed.values())


def _check_tie(spec: NodeSpec, in_shape: Shape, placed: dict[str, Any], fail: Any) -> None:
    target = placed.get(spec.tie)
    if target is None or not isinstance(target.layer, Embedding) or target.shares:
        raise fail(
            "tie", f"{spec.tie!r} is not an earlier Embedding node{suggest(spec.tie, list(placed))}"
        )
    table = target.layer
    if spec.layer.units != table.vocab_size or in_shape[-1:] != (table.dim,):
        raise fail(
            "tie",
            f"a Dense tied to {spec.tie!r} (vocab_size {table.vocab_size}, dim {table.dim}) "
            f"takes {table.dim} features and has {table.vocab_size} units; got input "
            f"{in_shape} and units {spec.layer.units}",
        )


def _check_outputs(model: Any, placed: dict[str, Any]) -> None:
    names = output_names(model, placed)
    for name in names:
        if name not in placed:
            raise SpecError(
                SpecIssue("model.outputs", f"{name!r} is not a node{suggest(name, list(placed))}")
            )
    if len(names) != 1:
        raise SpecError(
            SpecIssue("model.outputs", "several outputs are not supported yet; name one node")
        )


def output_names(model: Any, placed: Any = None) -> list[str]:
    """The graph's output nodes (the last node unless `model.outputs` names others)."""
    names = parse_outputs(model.outputs)
    if names is not None:
        return names
    return [model.nodes[-1].name]


def as_input_tuple(model: Any, x: Any, where: str = "inputs") -> tuple[Any, ...]:
    """A batch's model inputs as a tuple in input order: from a dict keyed by input name, a
    tuple or list in input order, or one array for a model with one input."""
    names = list(graph_inputs(model)) if model.nodes is not None else [SINGLE_INPUT]
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        extra = [k for k in x if k not in names]
        if missing or extra:
            from crosstrain.errors import DataError

            raise DataError(
                f"{where}: the model's inputs are {names}; "
                + (f"missing {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected {extra}" if extra else "")
            )
        return tuple(x[n] for n in names)
    if isinstance(x, (tuple, list)):
        if len(x) != len(names):
            from crosstrain.errors import DataError

            raise DataError(f"{where}: {len(x)} input arrays for the model's inputs {names}")
        return tuple(x)
    return (x,)


def export_input(model: Any, backend: str, format: str) -> tuple[tuple[int, ...], str]:
    """`(per-sample shape, dtype)` of the one input an export traces; UnsupportedFeature for a
    graph with several inputs (the exports trace one input array)."""
    if not model.is_graph:
        return tuple(model.input_shape), model.resolved_input_dtype
    inputs = graph_inputs(model)
    if len(inputs) > 1:
        from crosstrain.errors import UnsupportedFeature

        raise UnsupportedFeature(
            backend, f"export to {format!r} of a graph with several inputs ({list(inputs)})"
        )
    (only,) = inputs.values()
    return tuple(only.shape), only.dtype


def node_params(node: Any) -> dict[str, Any]:
    """The canonical parameters a node owns: none when it shares another's layer, a tied
    Dense's bias only."""
    if node.shares is not None:
        return {}
    specs = node.layer.params(node.input_shape)
    if node.tie is not None:
        specs.pop("kernel", None)
    return specs


def layer_params(node: Any, params: dict[str, Any], xp: Any = np) -> dict[str, Any]:
    """The parameters a node's layer computes with, from the model's canonical ones: its own,
    its owner's when it shares, the tied Embedding's table transposed as a Dense kernel."""
    own = child_params(params, node.shares or node.name)
    if node.tie is not None:
        own["kernel"] = (
            xp.permute_dims(params[f"{node.tie}/embeddings"], (1, 0))
            if xp is not np
            else params[f"{node.tie}/embeddings"].T
        )
    return own


def graph_forward(model: Any, nodes: list[Any], params, x, training=False, rng=None, xp=np):
    """Numpy reference forward of a graph (`x`: a dict, tuple or one array)."""
    values = dict(zip(graph_inputs(model), as_input_tuple(model, x), strict=True))
    for node in nodes:
        args = [values[name] for name in node.inputs]
        arg = args if getattr(node.layer, "merge", False) else args[0]
        values[node.name] = node.layer.forward(
            xp, layer_params(node, params, xp), arg, training, rng
        )
    return values[output_names(model)[0]]
