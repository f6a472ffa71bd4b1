"""Turns pydantic's errors into SpecIssues: a field path, what was expected, what was given."""

from __future__ import annotations

import types
import typing
from typing import Any

from crosstrain.errors import SpecIssue, shown, suggest
from pydantic import BaseModel, ValidationError


def format_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _strip_union_tags(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drops the tag pydantic inserts for discriminated unions (`optimizer.adam.lr` → `optimizer.lr`)."""
    kept, node = [], data
    for part in loc:
        if (
            isinstance(node, dict)
            and part not in node
            and part in (node.get("name"), node.get("type"))
        ):
            continue
        kept.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(kept)


def _peel(annotation: Any, value: Any) -> Any:
    """The model class an annotation validates `value` with, through Optional/Annotated/unions."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _peel(typing.get_args(annotation)[0], value)
    if origin in (typing.Union, types.UnionType):
        candidates = [a for a in typing.get_args(annotation) if a is not type(None)]
        for candidate in candidates:
            model = _peel(candidate, value)
            if isinstance(model, type) and issubclass(model, BaseModel) and isinstance(value, dict):
                tag_fields = [f for f in ("name", "type") if f in model.model_fields]
                tags = [typing.get_args(model.model_fields[f].annotation) for f in tag_fields]
                if not tags or any(
                    value.get(f) in t for f, t in zip(tag_fields, tags, strict=True)
                ):
                    return model
        return _peel(candidates[0], value) if candidates else None
    if annotation is Any and isinstance(value, dict) and "type" in value:
        from crosstrain.plugin.registry import get_registry

        return get_registry().layers.find(value["type"])
    return annotation


def _model_at(root: type[BaseModel], loc: tuple[Any, ...], data: Any) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `loc` in `data`."""
    model: Any = root
    node = data
    for part in loc:
        if isinstance(part, int):
            model = typing.get_args(_peel_list(model))[0] if _peel_list(model) else None
            node = node[part] if isinstance(node, list) and part < len(node) else None
            model = _peel(model, node)
            continue
        if (
            not (isinstance(model, type) and issubclass(model, BaseModel))
            or part not in model.model_fields
        ):
            return None
        node = node.get(part) if isinstance(node, dict) else None
        annotation = model.model_fields[part].annotation
        model = annotation if _peel_list(_peel(annotation, node)) else _peel(annotation, node)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _peel_list(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _peel_list(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        lists = [_peel_list(a) for a in typing.get_args(annotation)]
        return next((x for x in lists if x), None)
    return annotation if origin is list else None


def _message(error: dict[str, Any], parent: type[BaseModel] | None) -> str:
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "extra_forbidden":
        key = error["loc"][-1]
        fields = set(parent.model_fields) if parent else set()
        hint = suggest(key, fields) or (
            f"; valid keys: {', '.join(sorted(fields))}" if fields else ""
        )
        return f"unknown key {shown(key)}{hint}"
    if kind == "missing":
        return "required, but missing"
    if kind == "greater_than" and ctx.get("gt") == 0:
        annotation = (
            parent.model_fields[error["loc"][-1]].annotation
            if parent and error["loc"][-1] in parent.model_fields
            else None
        )
        number = "integer" if "int" in str(annotation).lower() else "number"
        return f"expected a positive {number}, got {shown(got)}"
    expected = {
        "greater_than": f"a number > {ctx.get('gt')}",
        "greater_than_equal": f"a number >= {ctx.get('ge')}",
        "less_than": f"a number < {ctx.get('lt')}",
        "less_than_equal": f"a number <= {ctx.get('le')}",
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "tuple_type": "a list",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
        "too_short": f"at least {ctx.get('min_length')} item(s)",
        "literal_error": f"one of {ctx.get('expected')}",
    }.get(kind)
    if kind == "literal_error" and isinstance(got, str):
        options = [
            o.strip(" '") for o in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")
        ]
        return f"expected {expected}, got {shown(got)}{suggest(got, options)}"
    if kind == "union_tag_invalid":
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        return f"unknown {ctx.get('discriminator', 'name').strip(chr(39))} {shown(ctx.get('tag'))}{suggest(ctx.get('tag'), tags)}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"missing the key {ctx.get('discriminator')}"
    if expected:
        return f"expected {expected}, got {shown(got)}"
    message = error["msg"][0].lower() + error["msg"][1:]
    return message if len(message) <= 500 else f"{message[:500]}… ({len(message)} chars)"


def issues_from_validation_error(
    err: ValidationError, data: Any, root: type[BaseModel]
) -> list[SpecIssue]:
    issues = []
    for error in err.errors():
        loc = _strip_union_tags(tuple(error["loc"]), data)
        error = {**error, "loc": loc}
        parent = (
            _model_at(root, loc[:-1], data)
            if error["type"] in ("extra_forbidden", "greater_than")
            else None
        )
        issue = SpecIssue(format_path(loc), _message(error, parent))
        if issue not in issues:
            issues.append(issue)
    return issues
