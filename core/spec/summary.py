"""A Keras-style model summary of a spec: layers, output shapes, parameter counts.

Computed from the spec alone (shape inference and canonical parameters in `core.model`), so
it imports no framework and looks the same whichever backend will train the model.

Example:
    >>> print(summary("examples/digits_mlp.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crosstrain.errors import SpecError, SpecIssue
from crosstrain.nn.model import LayerNode, count_params, node_params, plan
from crosstrain.spec.schema import Spec, load_spec

BYTES_PER_PARAM = 4
"""Sizes are reported for float32 parameters."""


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[int] = (),
    rule: str = "─",
) -> str:
    """Rows as fixed-width text columns under a header, readable in a terminal and in a file.

    Args:
        headers: column titles.
        rows: cells as strings, one sequence per row.
        right: indexes of the columns to right-align (numbers).
        rule: the character of the lines above and below the header.

    Returns:
        The table, lines joined by newlines, without trailing spaces.
    """
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    ruler = rule * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([ruler, line(headers), ruler, *(line(r) for r in rows)])


def shape_text(shape: Sequence[int]) -> str:
    """A per-sample shape with the batch axis shown as None: `(64,)` → `(None, 64)`."""
    return "(" + ", ".join(["None", *map(str, shape)]) + ("," if not shape else "") + ")"


def _params_of(node: LayerNode) -> int:
    own = sum(_size(p.shape) for p in node_params(node).values())
    return own + sum(_params_of(child) for child in node.children)


def _size(shape: Sequence[int]) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


@dataclass(frozen=True)
class SummaryRow:
    """One layer of a `ModelSummary`: its canonical path (`residual_2/dense_0`), type, per-sample
    output shape (no batch axis), parameter count (its children's included) and nesting depth;
    a graph node's also the names it reads (`inputs`)."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    depth: int
    inputs: tuple[str, ...] = ()


class ModelSummary(str):
    """What `summary` returns: the table as text (a `str`, so `print` shows it) plus the data.

    Attributes:
        rows: one `SummaryRow` per layer, nested layers after their parent.
        total_params, trainable_params, non_trainable_params: the totals of the table.
    """

    rows: tuple[SummaryRow, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int

    def __new__(
        cls, text: str, rows: Sequence[SummaryRow], trainable: int, frozen: int
    ) -> ModelSummary:
        made = super().__new__(cls, text)
        made.rows = tuple(rows)
        made.trainable_params, made.non_trainable_params = trainable, frozen
        made.total_params = trainable + frozen
        return made

    def __repr__(self) -> str:  # a notebook cell shows the table, not a quoted string
        return str(self)

    def row(self, name: str) -> SummaryRow:
        """The row of the layer named `name` (a canonical path such as `residual_2/dense_0`).

        Raises:
            KeyError: no layer has that name; the message lists the names.
        """
        for found in self.rows:
            if found.name == name:
                return found
        raise KeyError(f"no layer {name!r}; layers: {', '.join(r.name for r in self.rows)}")


def _summary_rows(nodes: list[LayerNode], depth: int = 0) -> list[SummaryRow]:
    rows = []
    for node in nodes:
        shape = tuple(int(d) for d in node.output_shape)
        kind = node.layer.type
        if node.shares is not None:
            kind += f" (shares {node.shares})"
        if node.tie is not None:
            kind += f" (tied to {node.tie})"
        params = _params_of(node)
        rows.append(SummaryRow(node.name, kind, shape, params, depth, tuple(node.inputs)))
        rows += _summary_rows(node.children, depth + 1)
    return rows


def _cells(row: SummaryRow, graph: bool = False) -> list[str]:
    cells = ["  " * row.depth + row.name, row.type, shape_text(row.output_shape), f"{row.params:,}"]
    if graph:
        cells.insert(2, ", ".join(row.inputs))
    return cells


def _title(spec: Spec) -> str:
    model = spec.model
    if not model.is_graph:
        return f'Model "{spec.name}"  input {shape_text(model.input_shape)}'
    from crosstrain.nn.graph import graph_inputs, output_names

    shown = [
        f"{name} {shape_text(i.shape)}" + (f" {i.dtype}" if i.dtype != "float32" else "")
        for name, i in graph_inputs(model).items()
    ]
    return (
        f'Model "{spec.name}"  inputs {", ".join(shown)}  outputs {", ".join(output_names(model))}'
    )


def megabytes(params: int) -> str:
    """The size of `params` float32 values, e.g. `0.04 MB` (`<0.01 MB` for a few)."""
    size = params * BYTES_PER_PARAM / 1024**2
    return "<0.01 MB" if 0 < size < 0.005 else f"{size:,.2f} MB"


def model_summary_text(spec: Spec) -> str | None:
    """The model table of a spec (`summary`), or None for a spec without a model (a native
    model's); what `summary.txt` of a run and every tracker logger hold."""
    return None if spec.model is None else summary(spec)


def summary(spec: Spec | Any) -> ModelSummary:
    """The model of a spec as a table: layer, type, output shape, parameters, then totals.

    Nested layers (inside Residual or Sequential) are indented under their parent, whose
    count includes theirs. Parameter names follow the canonical state (`<layer>/<param>`).

    Args:
        spec: a Spec or anything `load_spec` accepts (path, dict, YAML text, Module).

    Returns:
        A `ModelSummary`: the fixed-width text (no trailing newline) as a `str`, with
        `.rows` (`SummaryRow`: name, type, output_shape, params, depth) and the totals.

    Raises:
        SpecError: the spec has no model, or its layer shapes do not fit together.
    """
    spec = load_spec(spec)
    if spec.model is None:
        raise SpecError(SpecIssue("model", "no model in the spec: nothing to summarise"))
    nodes = plan(spec.model)
    trainable, frozen = count_params(spec.model)
    total = trainable + frozen
    rows = _summary_rows(nodes)
    graph = spec.model.is_graph
    cells = [_cells(r, graph) for r in rows]
    headers = ["Node", "Type", "Inputs", "Output shape", "Params"] if graph else None
    headers = headers or ["Layer", "Type", "Output shape", "Params"]
    table = format_table(headers, cells, right=(len(headers) - 1,))
    width = len(table.splitlines()[0])
    title = _title(spec)
    counts = {
        "Total params:": total,
        "Trainable params:": trainable,
        "Non-trainable params:": frozen,
    }
    digits = len(f"{total:,}")
    totals = [
        f"{label:<22}{count:>{digits},}  ({megabytes(count)})" for label, count in counts.items()
    ]
    return ModelSummary("\n".join([title, table, "─" * width, *totals]), rows, trainable, frozen)
