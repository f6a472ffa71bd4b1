"""`crosstrain schema`: the JSON Schema of a spec for editors, every registered layer type
spelled out; `--markdown` renders the spec reference (docs/spec-reference.md) from it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from crosstrain.plugin.command import Command
from crosstrain.plugin.registry import Registry, get_registry
from crosstrain.spec.schema import Spec


def spec_json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of a spec, with every registered layer type and optimizer spelled out.

    Python callables (`fn` of a loss given in code) have no JSON form and are left out.
    """
    from pydantic.json_schema import GenerateJsonSchema, models_json_schema
    from pydantic_core import PydanticOmit

    class Generator(GenerateJsonSchema):
        def callable_schema(self, schema: Any) -> Any:
            raise PydanticOmit

        def get_default_value(self, schema: Any) -> Any:
            # defaults made by a factory (`loggers: [csv]`, the Adam optimizer) are shown too
            factory = schema.get("default_factory")
            if factory is not None and not schema.get("default_factory_takes_data"):
                return factory()
            return super().get_default_value(schema)

    schema = Spec.model_json_schema(schema_generator=Generator)
    registry = registry or get_registry()
    definitions = schema.setdefault("$defs", {})
    for field, table, nullable in (
        ("optimizer", registry.optimizers, False),
        ("schedule", registry.schedules, True),
    ):
        _spell_out(schema, field, {n: table.get(n) for n in table.names()}, nullable, Generator)
    layer_classes = [registry.layers.get(name) for name in registry.layers.names()]
    if not layer_classes:
        return schema
    _, layers = models_json_schema(
        [(cls, "validation") for cls in layer_classes],
        schema_generator=Generator,
        ref_template="#/$defs/{model}",
    )
    for name, definition in layers.get("$defs", {}).items():
        definitions.setdefault(name, definition)
    definitions["AnyLayer"] = {
        "description": "one layer: its `type` picks the layer and its options",
        "oneOf": [{"$ref": f"#/$defs/{cls.__name__}"} for cls in layer_classes],
    }
    for definition in definitions.values():
        field = definition.get("properties", {}).get("layers")
        for option in [field, *(field or {}).get("anyOf", [])]:
            if isinstance(option, dict) and option.get("items") == {}:
                option["items"] = {"$ref": "#/$defs/AnyLayer"}
    return schema


def _spell_out(
    schema: dict[str, Any], field: str, classes: dict[str, type], nullable: bool, generator: Any
) -> None:
    """`schema.properties[field]` as a `name`-discriminated choice of the registered classes."""
    from pydantic.json_schema import models_json_schema

    if not classes:
        return
    _, found = models_json_schema(
        [(cls, "validation") for cls in classes.values()],
        schema_generator=generator,
        ref_template="#/$defs/{model}",
    )
    definitions = schema.setdefault("$defs", {})
    for name, definition in found.get("$defs", {}).items():
        definitions.setdefault(name, definition)
    choice = {
        "discriminator": {
            "mapping": {n: f"#/$defs/{c.__name__}" for n, c in classes.items()},
            "propertyName": "name",
        },
        "oneOf": [{"$ref": f"#/$defs/{c.__name__}"} for c in classes.values()],
    }
    if nullable:
        choice = {"anyOf": [choice, {"type": "null"}]}
    before = schema["properties"][field]
    schema["properties"][field] = {
        **choice,
        "default": before.get("default"),
        "title": field.capitalize(),
    }


def cmd_schema(args: argparse.Namespace) -> int:
    if args.markdown:
        from crosstrain.spec.reference import render_spec_reference

        print(render_spec_reference(spec_json_schema()), end="")
        return 0
    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="the spec reference as Markdown tables instead (docs/spec-reference.md)",
    )


COMMANDS = (Command("schema", "the JSON Schema of a spec, for editors", _configure, cmd_schema),)
