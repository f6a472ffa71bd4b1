"""The spec reference (docs/spec-reference.md), generated from the JSON Schema of a spec.

`crosstrain schema --markdown` prints it. Every section of a spec becomes a table of its
fields (type, default, description), each choice of a `name`-discriminated field (optimizers,
schedules) gets its own table, and every registered layer type is listed with its options.
The committed page is compared with this output by a test, so it cannot drift from the code.

Descriptions come from the schema (`Field(description=...)` or a model's docstring). For the
fields that have none yet, `FIELD_NOTES` supplies one; a description in the schema wins.

Example:
    >>> from crosstrain.cli.schema import spec_json_schema
    >>> print(render_spec_reference(spec_json_schema()))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

FIELD_NOTES: dict[str, str] = {
    "Spec.name": "name of the run; run directories go to `<trainer.run_dir>/<name>/<time>/`",
    "Spec.seed": "seeds parameter initialisation, the validation split, batch order and dropout",
    "Spec.data": "where the data comes from and how it is batched",
    "Spec.model": "the model; may be left out when a native model is passed to `fit`",
    "Spec.loss": "a loss name (`cross_entropy`, `mse` ...), `package.module:function`, or `{name, options}`",
    "Spec.metrics": "metrics, each written like `loss`; reported as `<split>_<name>` (`val_accuracy`)",
    "Spec.optimizer": "`name` picks the optimizer; the other keys are its options",
    "Spec.schedule": "learning-rate schedule, stepped per optimizer step; none keeps lr constant",
    "Spec.trainer": "how long to train, where, in which precision, what to report",
    "DataSpec.validation_split": "fraction held out for validation by a seeded split (0: none)",
    "DataSpec.batch_size": "samples per training step",
    "DataSpec.eval_batch_size": "samples per validation/test/predict step (default: `batch_size`)",
    "DataSpec.shuffle": "visit training samples in a new seeded order each epoch",
    "DataSpec.drop_last": "skip the last training batch of an epoch when it is smaller",
    "DataSpec.device_cache": "keep the whole data set on the device when it fits (`auto`)",
    "ModelSpec.input_shape": "shape of one sample, without the batch axis; channels last",
    "ModelSpec.layers": "the layers, applied in order (see [Layers](#layers))",
    "ModelSpec.input_dtype": "dtype of the inputs (default: `int64` before an Embedding, else `float32`)",
    "ModelSpec.init": "`seed`: initialise from the seed with numpy (same on every backend); `native`: on the device",
    "FunctionSpec.name": "registered name or `package.module:function`",
    "FunctionSpec.options": "keyword arguments passed to the function",
    "TrainerSpec.max_epochs": "passes over the training data",
    "TrainerSpec.max_steps": "stop after this many optimizer steps (wins over `max_epochs`)",
    "TrainerSpec.precision": "`32`, `64`, mixed (`16-mixed`, `bf16-mixed`) or pure bfloat16 (`bf16-true`)",
    "TrainerSpec.accelerator": "device kind; `auto` picks the best one the backend finds",
    "TrainerSpec.devices": "number of devices; more than one trains data parallel",
    "TrainerSpec.strategy": "how several devices share the work",
    "TrainerSpec.compile": "compile the model (torch: `torch.compile`)",
    "TrainerSpec.steps_per_execution": "optimizer steps fused into one compiled call (backends that declare it)",
    "TrainerSpec.log_every_n_steps": "how often metrics are pulled from the device, logged and shown",
    "TrainerSpec.val_every_n_epochs": "validate every N epochs",
    "TrainerSpec.progress": "show a progress bar",
    "TrainerSpec.loggers": "loggers by registered name, or `{name: ..., <options>}`; each "
    "writes into the run directory",
    "TrainerSpec.early_stopping": "stop when a metric stops improving; none: never",
    "TrainerSpec.checkpoint": "checkpoint policy; null: write no checkpoints",
    "TrainerSpec.run_dir": "root of the run directories: a path, or any fsspec URL (`s3://`, "
    "`gs://`, `file://`, `memory://` ...; staged locally, uploaded as checkpoints commit)",
    "EarlyStoppingSpec.monitor": "metric to watch, e.g. `val_loss`",
    "EarlyStoppingSpec.mode": "`min`: lower is better; `max`: higher is better",
    "EarlyStoppingSpec.patience": "epochs without improvement before stopping",
    "EarlyStoppingSpec.min_delta": "smallest change that counts as an improvement",
    "CheckpointSpec.every_n_epochs": "write a checkpoint every N epochs",
    "CheckpointSpec.keep": "how many recent checkpoints to keep",
    "CheckpointSpec.keep_best": "also keep the best checkpoint by `monitor`",
    "CheckpointSpec.mode": "`min`: lower `monitor` is better; `max`: higher",
}
"""Descriptions for schema fields that have none, keyed `<definition>.<field>`."""

OPTION_NOTES: dict[str, str] = {
    "lr": "learning rate (the peak of a schedule)",
    "weight_decay": "L2 penalty for sgd, adam and rmsprop; decoupled weight decay for the others",
    "beta_1": "decay of the first-moment estimate",
    "beta_2": "decay of the second-moment estimate",
    "epsilon": "added for numerical stability",
    "rho": "decay of the squared-gradient average",
    "momentum": "momentum factor",
    "nesterov": "Nesterov momentum",
    "warmup_steps": "steps of linear warmup from 0 to lr before the schedule starts",
    "decay_steps": "length of the decay in steps (default: the rest of the run)",
    "min_ratio": "final lr as a fraction of lr",
    "end_ratio": "final lr as a fraction of lr",
    "step_size": "steps between two decays",
    "gamma": "factor applied at each decay",
    "units": "output features",
    "activation": "applied to the output (default: none)",
    "use_bias": "add a learned bias",
    "filters": "output channels",
    "kernel_size": "window size (an int: the same on every axis)",
    "strides": "step between windows (an int: the same on every axis; pools: default `pool_size`)",
    "padding": "`valid`: no padding; `same`: pad so that output size = ceil(input / stride)",
    "pool_size": "window size (an int: the same on every axis)",
    "rate": "fraction of activations zeroed in training",
    "vocab_size": "number of distinct ids",
    "dim": "size of each embedding vector",
    "num_heads": "attention heads",
    "head_dim": "features per head",
    "causal": "mask future positions",
    "target_shape": "new per-sample shape",
    "layers": "the sub-layers, applied in order",
}
"""Descriptions by field name, for the options of optimizers, schedules and layers."""

TYPE_NAMES = {"integer": "int", "number": "float", "string": "string", "boolean": "bool"}


@dataclass
class Section:
    """One table of the reference: a heading, an intro line and the definition it shows."""

    title: str
    definition: str
    intro: str = ""
    level: int = 2


def slug(title: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


class _Renderer:
    def __init__(self, schema: dict[str, Any]):
        self.schema = schema
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.sections: list[Section] = []
        self.anchors: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.layers = [_ref_name(r) for r in self.defs.get("AnyLayer", {}).get("oneOf", [])]

    def definition(self, name: str) -> dict[str, Any]:
        return self.schema if name == "" else self.defs[name]

    def collect(self, name: str, title: str, level: int, intro: str = "") -> None:
        """Adds the section of definition `name` and, after it, those of its sub-sections."""
        if name in self.anchors or name == "AnyLayer" or name in self.layers:
            return
        self.anchors[name] = slug(title)
        self.labels[name] = title.strip("`")
        self.sections.append(Section(title, name, intro, level))
        child = 2 if name == "" else level + 1
        for field, prop in self.definition(name).get("properties", {}).items():
            path = f"{title.strip('`').split(':')[0]}.{field}" if name else field
            choices = _choices(prop)
            if choices:
                names = ", ".join(f"`{key}`" for key in choices)
                self.anchors[f"choices:{path}"] = slug(f"`{path}`")
                intro = f"`{path}.name` picks one of {names}; the other keys are its options."
                self.sections.append(Section(f"`{path}`", "", intro, child))
                for key, ref in choices.items():
                    self.collect(ref, f"`{path}: {key}`", child + 1)
                continue
            for ref in _refs(prop):
                if ref in self.defs and "properties" in self.defs[ref]:
                    self.collect(ref, f"`{path}`", child)

    def type_text(self, prop: dict[str, Any], path: str = "") -> str:
        if "$ref" in prop:
            ref = _ref_name(prop["$ref"])
            if ref == "AnyLayer":
                return "[layer](#layers)"
            if ref in self.anchors:
                return f"[{self.labels[ref]}](#{self.anchors[ref]})"
            return ref
        if "anyOf" in prop:
            parts = [p for p in prop["anyOf"] if p.get("type") != "null"]
            nullable = len(parts) < len(prop["anyOf"])
            text = " or ".join(self.type_text(p, path) for p in parts)
            return f"{text} or null" if nullable else text
        if "oneOf" in prop:
            anchor = self.anchors.get(f"choices:{path}")
            if anchor:
                return f"[one of {len(prop['oneOf'])}](#{anchor})"
            return " or ".join(self.type_text(p, path) for p in prop["oneOf"])
        if "const" in prop:
            return f"`{json.dumps(prop['const'])}`"
        if "enum" in prop:
            return ", ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
        kind = prop.get("type")
        if kind == "array":
            if "prefixItems" in prop:
                return "[" + ", ".join(self.type_text(p) for p in prop["prefixItems"]) + "]"
            items = self.type_text(prop.get("items", {}), path)
            least = f", at least {prop['minItems']}" if prop.get("minItems") else ""
            return f"list of {items}{least}" if items else "list"
        if kind == "object":
            values = prop.get("additionalProperties")
            inner = self.type_text(values, path) if isinstance(values, dict) and values else ""
            return f"mapping of name to {inner}" if inner else "mapping"
        return _bounded(TYPE_NAMES.get(kind, kind or "any"), prop)

    def table(self, name: str, path: str) -> list[str]:
        definition = self.definition(name)
        required = set(definition.get("required", []))
        rows = ["| field | type | default | description |", "|---|---|---|---|"]
        for field, prop in definition.get("properties", {}).items():
            description = (
                prop.get("description")
                or FIELD_NOTES.get(f"{definition.get('title', name)}.{field}")
                or OPTION_NOTES.get(field, "")
                or ("picks this choice" if "const" in prop else "")
            )
            where = f"{path}.{field}" if path else field
            rows.append(
                f"| `{field}` | {self.type_text(prop, where)} | "
                f"{_default(prop, field in required)} | {_cell(description)} |"
            )
        return rows

    def render(self) -> str:
        self.collect("", "Top level", 2)
        out = [
            "# Spec reference",
            "",
            "<!-- Generated by `crosstrain schema --markdown` from the JSON Schema of a spec; do",
            "     not edit. Regenerate with the built-in plugins only:",
            "     CROSSTRAIN_DISABLE_PLUGIN_AUTOLOAD=1 crosstrain schema --markdown > docs/spec-reference.md -->",
            "",
            "A spec is YAML, JSON, a Python dict or a `crosstrain.Module`, validated into the same",
            "model. Unknown keys are errors, reported with their field path. `--set key=value`",
            "and `Spec.override` change one field (`trainer.max_epochs`, `model.layers[0].units`).",
            "`crosstrain schema` prints the JSON Schema itself, for editors; this page is made",
            "from it. Installed plugins can add layer types, losses, metrics, data sources and",
            "loggers; `crosstrain schema --markdown` lists theirs too.",
            "",
            "Sections: "
            + " · ".join(
                f"[{s.title.strip('`')}](#{slug(s.title)})" for s in self.sections if s.level == 2
            )
            + " · [Layers](#layers)",
        ]
        for section in self.sections:
            out += ["", "#" * section.level + " " + section.title, ""]
            if section.intro:
                out.append(section.intro)
            if section.definition == "" and section.title != "Top level":
                continue
            description = self.definition(section.definition).get("description", "")
            if section.intro:
                out.append("")
            if description:
                out += [_paragraph(description), ""]
            path = "" if section.title == "Top level" else section.title.strip("`").split(":")[0]
            out += self.table(section.definition, path)
        out += self.layer_sections()
        return "\n".join(out) + "\n"

    def layer_sections(self) -> list[str]:
        out = [
            "",
            "## Layers",
            "",
            "Each entry of `model.layers` (and of a composite layer's `layers`) is a mapping whose",
            "`type` picks the layer; the other keys are its options. Every layer takes an optional",
            "`name`, its canonical name in checkpoints (default `<type in lower case>_<position>`),",
            "and `trainable: false` to freeze it (no gradient, no optimizer update or slots; still",
            "in the checkpoint; a frozen composite freezes its layers). Initialiser options",
            "(`kernel_initializer` ...) take a Keras name or `{name, options}`: "
            + ", ".join(f"`{n}`" for n in _initializer_names())
            + ", or `package.module:function`.",
            "",
            "| type | options |",
            "|---|---|",
        ]
        for name in self.layers:
            options = [
                f
                for f in self.defs[name].get("properties", {})
                if f not in ("type", "name", "trainable")
            ]
            listed = ", ".join(f"`{f}`" for f in options) or "—"
            out.append(f"| [{name}](#{slug(name)}) | {listed} |")
        for name in self.layers:
            definition = self.defs[name]
            out += ["", f"### {name}", ""]
            if definition.get("description"):
                out += [_paragraph(definition["description"]), ""]
            options = {
                k: v
                for k, v in definition.get("properties", {}).items()
                if k not in ("type", "name")
            }
            if not options:
                out.append(f"No options: `{{type: {name}}}`.")
                continue
            out += [
                row
                for row in self.table(name, name)
                if not row.startswith(("| `type` ", "| `name` "))
            ]
        return out


def _initializer_names() -> tuple[str, ...]:
    from crosstrain.nn.initializers import INITIALIZER_NAMES

    return INITIALIZER_NAMES


def _ref_name(ref: Any) -> str:
    value = ref["$ref"] if isinstance(ref, dict) else ref
    return value.rsplit("/", 1)[-1]


def _refs(prop: dict[str, Any]) -> list[str]:
    """Definitions a field refers to, directly, through `anyOf` or as list items."""
    found = [_ref_name(prop)] if "$ref" in prop else []
    for part in prop.get("anyOf", []):
        found += _refs(part)
    for key in ("items", "additionalProperties"):  # list items, mapping values
        if isinstance(prop.get(key), dict):
            found += _refs(prop[key])
    return found


def _choices(prop: dict[str, Any]) -> dict[str, str]:
    """`{name: definition}` of a `name`-discriminated field (directly or inside `anyOf`)."""
    for part in [prop, *prop.get("anyOf", [])]:
        mapping = part.get("discriminator", {}).get("mapping")
        if mapping:
            return {key: _ref_name(ref) for key, ref in mapping.items()}
    return {}


def _bounded(name: str, prop: dict[str, Any]) -> str:
    """`int > 0`, `0 ≤ float < 1` ... from the numeric bounds of a field."""
    low = (
        f"{_number(prop['minimum'])} ≤ "
        if "minimum" in prop
        else f"{_number(prop['exclusiveMinimum'])} < "
        if "exclusiveMinimum" in prop
        else ""
    )
    high = (
        f" ≤ {_number(prop['maximum'])}"
        if "maximum" in prop
        else f" < {_number(prop['exclusiveMaximum'])}"
        if "exclusiveMaximum" in prop
        else ""
    )
    if low and not high:  # `int > 0` reads better than `0 < int`
        sign = {"≤": "≥", "<": ">"}[low.split()[-1]]
        return f"{name} {sign} {low.split()[0]}"
    return f"{low}{name}{high}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _default(prop: dict[str, Any], required: bool) -> str:
    if "default" not in prop:
        return "**required**" if required else "—"
    value = prop["default"]
    if isinstance(value, dict) and value:
        return "see below"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    """Text fit for one table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _paragraph(text: str) -> str:
    return "\n".join(line.strip() for line in text.strip().splitlines())


def render_spec_reference(schema: dict[str, Any]) -> str:
    """The spec reference as Markdown, from the JSON Schema `crosstrain schema` prints.

    Args:
        schema: the output of `crosstrain.cli.schema.spec_json_schema()`.
    """
    return _Renderer(schema).render()
