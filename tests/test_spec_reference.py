"""The spec reference (docs/spec-reference.md) is generated from the JSON Schema and stays so:
the committed page equals the generator's output, every field and layer type is in it, and
`crosstrain schema --markdown` prints it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

from crosstrain.cli.schema import spec_json_schema
from crosstrain.nn.layers import Layer
from crosstrain.plugin.registry import DEFAULT_PLUGINS, build_registry
from crosstrain.spec.reference import FIELD_NOTES, render_spec_reference, slug

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "spec-reference.md"
REGENERATE = (
    "CROSSTRAIN_DISABLE_PLUGIN_AUTOLOAD=1 crosstrain schema --markdown > docs/spec-reference.md"
)


def builtin_schema() -> dict:
    """The schema with the built-in plugins only, as the committed page is generated."""
    return spec_json_schema(build_registry(only=list(DEFAULT_PLUGINS)))


def test_committed_page_is_the_generated_one():
    generated = render_spec_reference(builtin_schema())
    committed = PAGE.read_text(encoding="utf-8")
    assert committed == generated, f"docs/spec-reference.md is out of date; run: {REGENERATE}"


def test_every_field_and_layer_type_is_documented():
    schema = builtin_schema()
    page = render_spec_reference(schema)
    definitions = {"Spec": schema, **schema["$defs"]}
    for name, definition in definitions.items():
        for field in definition.get("properties", {}):
            if field not in ("type", "name") or name in ("Spec", "FunctionSpec"):
                assert f"| `{field}` |" in page, f"{name}.{field} is missing from the reference"
    layers = [ref["$ref"].rsplit("/", 1)[-1] for ref in schema["$defs"]["AnyLayer"]["oneOf"]]
    assert {"Dense", "Conv2D", "Residual", "MultiHeadSelfAttention"} <= set(layers)
    for layer in layers:
        assert f"\n### {layer}\n" in page and f"(#{slug(layer)})" in page
    assert "| `max_epochs` | int > 0 | `10` |" in page
    loggers = '| `loggers` | list of string or [trainer.loggers](#trainerloggers) | `["csv"]` |'
    assert loggers in page  # a default made by a factory


def test_field_notes_name_existing_fields():
    """A note for a field that no longer exists would be dead text: every key must resolve."""
    schema = builtin_schema()
    definitions = {"Spec": schema, **schema["$defs"]}
    for key in FIELD_NOTES:
        definition, _, field = key.partition(".")
        assert field in definitions.get(definition, {}).get("properties", {}), f"stale note {key}"


class Gate(Layer):
    """`x * sigmoid(x)`, a plugin layer for this test."""

    type: Literal["Gate"] = "Gate"
    width: int = 4


def test_plugin_layers_are_listed_with_their_options():
    registry = build_registry(only=list(DEFAULT_PLUGINS))
    registry.layers.add(Gate)
    page = render_spec_reference(spec_json_schema(registry))
    assert "| [Gate](#gate) | `width` |" in page
    assert "\n### Gate\n\n`x * sigmoid(x)`, a plugin layer for this test.\n" in page


def test_cli_prints_the_reference(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "crosstrain.cli", "schema", "--markdown"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PATH": "", "CROSSTRAIN_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == render_spec_reference(builtin_schema())
