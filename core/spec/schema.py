"""The spec: what to train, as validated data. Loaded from YAML, JSON, a dict or a `Module`.

Example:
    >>> spec = load_spec({"model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 2}]}})
    >>> spec.override({"trainer.max_epochs": 3}).trainer.max_epochs
    3
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import yaml
from crosstrain.data.arrays import DataSpec
from crosstrain.errors import SpecError, SpecIssue
from crosstrain.nn.model import ModelSpec
from crosstrain.nn.optim import Adam
from crosstrain.nn.optimizers import AnyOptimizer
from crosstrain.nn.schedules import AnySchedule
from crosstrain.spec.messages import issues_from_validation_error
from crosstrain.spec.trainer import (  # noqa: F401 (re-exported: the spec's parts)
    Accelerator,
    CheckpointSpec,
    EarlyStoppingSpec,
    LoggerSpec,
    Precision,
    TrainerSpec,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)


def name_problem(name: Any) -> str | None:
    """Why `name` cannot name a spec, or None: it must be one path segment, since the run
    directory (`runs/<name>/`) and exports are named after it."""
    if not isinstance(name, str):
        return "is not a string"
    if name in ("", ".", ".."):
        return "must be one path segment, not empty, '.' or '..'"
    if len(name) > 100:
        return "is longer than 100 characters"
    bad = [c for c in name if c in "/\\:" or ord(c) < 32 or ord(c) == 127]
    if bad:
        return f"must be one path segment: {bad[0]!r} is not allowed in it"
    return None


def _one_path_segment(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise ValueError(f"{problem} (runs/<name>/ and exports are named after it)")
    return name


def _named(value: Any) -> Any:
    """`cross_entropy` is short for `{name: cross_entropy}`; a callable becomes `{fn: ...}`."""
    if isinstance(value, str):
        return {"name": value}
    if callable(value) and not isinstance(value, BaseModel):
        return {"name": getattr(value, "__qualname__", "custom"), "fn": value}
    return value


class FunctionSpec(BaseModel):
    """A loss or metric: a registered name or `package.module:function`, plus keyword options."""

    model_config = ConfigDict(extra="forbid")
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    fn: Callable[..., Any] | None = Field(
        None, exclude=True, description="a Python callable (API only)"
    )


NamedFunction = Annotated[FunctionSpec, BeforeValidator(_named)]


class Spec(BaseModel):
    """A whole training spec. Build it with `load_spec`; change it with `override`."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, AfterValidator(_one_path_segment)] = Field(
        "run", description="one path segment: names the run directory runs/<name>/"
    )
    seed: int = 0
    backend: str | None = Field(
        None, description="default backend when none is given on the command line"
    )
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec | None = None
    loss: NamedFunction = Field(default_factory=lambda: FunctionSpec(name="cross_entropy"))
    metrics: list[NamedFunction] = Field(default_factory=list)
    optimizer: AnyOptimizer = Field(default_factory=Adam)
    schedule: AnySchedule = None
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)

    @model_validator(mode="after")
    def _carried_state(self) -> Spec:
        """`trainer.stateful`: the recurrent layers hold states of `data.batch_size` rows."""
        from crosstrain.spec.stateful import attach

        attach(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON types) that `load_spec` turns back into an equal spec.

        A None is left out where it is the field's default, and kept where it is not
        (`trainer.checkpoint: null` turns checkpointing off: dropping it would restore the
        default on the way back, e.g. through `override` or a run's `spec.yaml`).
        """
        data = self.model_dump(mode="json")
        _drop_default_nones(self, data)
        return data

    def to_yaml(self) -> str:
        """The spec as YAML, keys in field order: what a run directory's `spec.yaml` holds."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def override(self, changes: dict[str, Any]) -> Spec:
        """A new spec with dotted keys set (`{"trainer.max_epochs": 3, "model.layers[0].units": 8}`).

        String values are read as YAML scalars (`"3"` → 3), as `--set key=value` does.
        """
        data = self.to_dict()
        values = [(key, _override_value(key, value)) for key, value in changes.items()]
        for key, value in values:
            _renamed(data, key, value)
        for key, value in values:
            _set_path(data, key, value)
        loss = data.get("loss")
        if (
            self.loss.fn is not None
            and isinstance(loss, dict)
            and loss.get("name") == self.loss.name
        ):
            loss["fn"] = self.loss.fn  # a Module's own loss, or a callable given to fit
        for metric, old in zip(data.get("metrics") or [], self.metrics, strict=False):
            if old.fn is not None and isinstance(metric, dict) and metric.get("name") == old.name:
                metric["fn"] = old.fn
        return validate_spec(data, source="overrides")


def _default_is_none(field: Any) -> bool:
    return field.default is None and field.default_factory is None


def _drop_default_nones(value: Any, data: Any) -> None:
    """Removes from `data` (the JSON dump of `value`) each None that is its field's default,
    and each None among a model's extra keys, walking models, lists and mappings together."""
    if isinstance(value, BaseModel) and isinstance(data, dict):
        for name, field in type(value).model_fields.items():
            if name not in data:
                continue
            item = getattr(value, name)
            if item is None:
                if _default_is_none(field):
                    del data[name]
            else:
                _drop_default_nones(item, data[name])
        for name in list(value.model_extra or {}):
            if name in data and data[name] is None:
                del data[name]
        inline = getattr(value, "inline_layer", None)  # a graph node's layer options
        if isinstance(inline, BaseModel):
            for name, field in type(inline).model_fields.items():
                if data.get(name, 0) is None and _default_is_none(field):
                    del data[name]
                elif name != "name" and getattr(inline, name) is not None and name in data:
                    _drop_default_nones(getattr(inline, name), data[name])
    elif isinstance(value, (list, tuple)) and isinstance(data, list):
        for item, dumped in zip(value, data, strict=False):
            _drop_default_nones(item, dumped)
    elif isinstance(value, dict) and isinstance(data, dict):
        for item, key in zip(value.values(), list(data), strict=False):
            _drop_default_nones(item, data[key])


def _renamed(data: dict[str, Any], key: str, value: Any) -> None:
    """As `extends:` does: setting a mapping's `name` or `type` to another one (`optimizer.name`,
    `schedule.name`, `model.layers[0].type`) starts that mapping afresh, since its other keys
    belong to the thing named before (Adam's `beta_1` is no option of SGD); a new `data.source`
    drops `data.options`. Keys set in the same override are applied after this."""
    parts = _split_path(key)
    if parts == ["data", "source"]:
        section = data.get("data")
        if isinstance(section, dict) and section.get("source") != value:
            section.pop("options", None)
        return
    if len(parts) < 2 or parts[-1] not in ("name", "type"):
        return
    node: Any = data
    for part in parts[:-2]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    parent = parts[-2]
    try:
        mapping = node[parent]
    except (KeyError, IndexError, TypeError):
        return
    if isinstance(mapping, dict) and parts[-1] in mapping and mapping[parts[-1]] != value:
        node[parent] = {parts[-1]: value}


def _override_value(key: str, value: Any) -> Any:
    """An override's value: a string is read as YAML; a malformed one is a SpecError at `key`."""
    if not isinstance(value, str):
        return value
    try:
        return _read_text(value, "overrides")
    except SpecError as err:
        raise SpecError(SpecIssue(key, err.issues[0].message), "overrides") from None


def _split_path(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in key.split("."):
        name, *indexes = piece.replace("]", "").split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indexes)
    return parts


def _set_path(data: dict[str, Any], key: str, value: Any) -> None:
    parts = _split_path(key)
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        try:
            node = node[part] if isinstance(part, int) else node.setdefault(part, {})
        except (IndexError, TypeError, AttributeError):
            where = key.rsplit(".", len(parts) - i - 1)[0]
            raise SpecError(
                SpecIssue(key, f"cannot set: {where!r} is not a mapping or list with that entry")
            ) from None
    try:
        node[parts[-1]] = value
    except (IndexError, TypeError):
        raise SpecError(SpecIssue(key, "cannot set: no such list entry")) from None


def _json_or_yaml(text: str) -> Any:
    """JSON text through `json` (50x faster than PyYAML on a large spec), else YAML through the
    safe loader (libyaml's parser when PyYAML has it)."""
    if text.lstrip().startswith(("{", "[")):
        import json

        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML flow style (`{a: 1}`) or JSON with comments: YAML reads it
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506


def _read_text(text: str, source: str) -> Any:
    """YAML (a superset of JSON) through the safe loader: no Python tags, ever."""
    from crosstrain.spec.compose import MAX_SPEC_DEPTH, check_size

    try:
        data = _json_or_yaml(text)
    except RecursionError:
        message = f"nested deeper than {MAX_SPEC_DEPTH} levels of mappings and lists"
        raise SpecError(SpecIssue("", message), source) from None
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        line = f"line {mark.line + 1}: " if mark else ""
        raise SpecError(
            SpecIssue("", f"{line}refused YAML tag ({err.problem}); specs are plain data"), source
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(SpecIssue("", f"malformed YAML: {where}{problem}"), source) from None
    check_size(data, source)  # an alias bomb or a recursive alias, before anything walks it
    return data


def validate_spec(data: Any, source: str | None = None) -> Spec:
    """Validates plain data into a Spec, reporting every problem at once with its field path."""
    if not isinstance(data, dict):
        raise SpecError(
            SpecIssue("", f"expected a mapping at the top of the spec, got {type(data).__name__}"),
            source,
        )
    from crosstrain.spec.compose import check_size

    check_size(data, source)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as err:
        raise SpecError(issues_from_validation_error(err, data, Spec), source) from None
    from crosstrain.spec.resolve import semantic_issues

    issues = semantic_issues(spec)
    if issues:
        raise SpecError(issues, source)
    return spec


def load_spec(
    source: Spec | dict[str, Any] | str | Path | Any, *, base_dir: str | Path | None = None
) -> Spec:
    """A validated Spec from a Spec, a `Module`, a dict, a YAML/JSON file path or YAML/JSON text.

    A file's `extends:` paths are relative to the file; a dict's or text's to `base_dir` (default:
    the current directory). `CROSSTRAIN_ACCELERATOR` is applied to everything but a `Spec`, which
    is taken as already resolved (see `crosstrain.spec.compose`).
    """
    from crosstrain.spec.compose import apply_environment, compose, name_origins, read_spec_file

    if isinstance(source, Spec):
        return source
    if hasattr(source, "to_spec"):
        return apply_environment(source.to_spec())
    directory = Path(base_dir) if base_dir is not None else Path()
    if isinstance(source, dict):
        data, origins = compose(source, "<dict>", directory)
        origin = None
    else:
        text, origin = str(source), "<text>"
        is_path = "\n" not in text and text.endswith((".yaml", ".yml", ".json"))
        if isinstance(source, Path) or is_path:
            data, origins = read_spec_file(Path(source))
            origin = str(source)
        else:
            data, origins = compose(_read_text(text, origin), origin, directory)
    try:
        spec = validate_spec(data, source=origin)
    except SpecError as err:
        raise name_origins(err, origins, origin or "<dict>") from None
    return apply_environment(spec)
