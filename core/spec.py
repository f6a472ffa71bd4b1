"""The spec: what to train, as validated data. Loaded from YAML, JSON, a dict or a `Module`.

Example:
    >>> spec = load_spec({"model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 2}]}})
    >>> spec.override({"trainer.max_epochs": 3}).trainer.max_epochs
    3
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_serializer,
    model_validator,
)

from ._spec_errors import issues_from_validation_error
from .data import DataSpec
from .errors import SpecError, SpecIssue
from .model import ModelSpec
from .optim import Adam, OptimizerSpec, ScheduleSpec


def _number_as_text(value: Any) -> Any:
    """`precision: 32` in YAML (or `--set trainer.precision=32`) means the string "32"."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Precision = Annotated[
    Literal["32", "64", "16-mixed", "bf16-mixed", "bf16-true"], BeforeValidator(_number_as_text)
]
Accelerator = Literal["auto", "cpu", "cuda", "mps", "tpu"]


def _batch_limit(least: int) -> Callable[[float], float]:
    def check(value: float) -> float:
        if isinstance(value, int) and value < least:
            raise ValueError(f"a count of batches must be >= {least}, got {value}")
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(
                f"a fraction of the epoch must be in (0, 1], got {value} (an integer is a count)"
            )
        return value

    return check


TrainLimit = Annotated[StrictInt | StrictFloat, AfterValidator(_batch_limit(1))]
"""Batches per epoch: an integer count >= 1 or a float fraction in (0, 1]."""
ValLimit = Annotated[StrictInt | StrictFloat, AfterValidator(_batch_limit(0))]
"""Validation batches per pass: an integer count (0: none) or a float fraction in (0, 1]."""


def _dev_run(value: bool | int) -> bool | int:
    if not isinstance(value, bool) and value < 1:
        raise ValueError(f"true, false or a number of batches >= 1, got {value}")
    return value


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


class EarlyStoppingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: NonNegativeInt = 3
    min_delta: NonNegativeFloat = 0.0
    baseline: float | None = Field(
        None,
        description="stop unless `monitor` beats this value within `patience` epochs (Keras)",
    )
    restore_best_weights: bool = Field(
        False,
        description="when stopping, put back the weights of the best epoch (Keras); the state "
        "is kept in host memory",
    )
    check_finite: bool = Field(
        True, description="stop as soon as `monitor` is NaN or infinite (Lightning)"
    )


class CheckpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every_n_epochs: PositiveInt = 1
    keep: PositiveInt = 3
    keep_best: bool = True
    save_top_k: NonNegativeInt | None = Field(
        None,
        description="keep the k best checkpoints by monitor/mode besides the `keep` last "
        "(default: 1 with keep_best, else 0)",
    )
    monitor: str | None = Field(
        None, description="metric for the best checkpoints (default: val_loss, else train_loss)"
    )
    mode: Literal["min", "max"] = "min"
    every_n_steps: PositiveInt | None = Field(
        None,
        description="also write a checkpoint every N optimizer steps, mid-epoch included "
        "(resumes exactly)",
    )
    every_minutes: PositiveFloat | None = Field(
        None,
        description="also write a checkpoint when this many minutes passed since the last one "
        "(checked at step boundaries)",
    )

    @property
    def top_k(self) -> int:
        """How many best checkpoints are kept: `save_top_k`, else 1 with `keep_best`, else 0."""
        if self.save_top_k is not None:
            return self.save_top_k
        return 1 if self.keep_best else 0


def _callback_item(value: Any) -> Any:
    """`timer` is short for `{name: timer}`."""
    return {"name": value} if isinstance(value, str) else value


class CallbackSpec(BaseModel):
    """One entry of `trainer.callbacks`: a registered name plus that callback's own options,
    written flat (`{name: timer, max_time: "00:10:00"}`) and checked by the callback's model."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def options(self) -> dict[str, Any]:
        """The keys besides `name`."""
        return dict(self.model_extra or {})


NamedCallback = Annotated[CallbackSpec, BeforeValidator(_callback_item)]


class LoggerSpec(BaseModel):
    """One entry of `trainer.loggers`: a registered name (`csv`), or a mapping of the name and
    that logger's own options written flat (`{name: jsonl, every_n_epochs: 2}`), checked by
    the logger's `options_model` (`crosstrain.Logger`)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="a registered logger (`crosstrain plugins` lists them)")

    @property
    def options(self) -> dict[str, Any]:
        """The keys besides `name`."""
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def _name_alone(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A logger without options is written as its bare name, as a spec names it."""
        data = handler(self)
        return self.name if not self.model_extra else data


class _NameOrMapping:
    """JSON Schema of an item that a spec writes as a bare name or a mapping with `name`."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: GetJsonSchemaHandler) -> Any:
        return {"anyOf": [{"type": "string"}, handler(core_schema)]}


NamedLogger = Annotated[LoggerSpec, BeforeValidator(_callback_item), _NameOrMapping()]


class TrainerSpec(BaseModel):
    """`trainer:` — the engineering: how long, where, in which precision, what to report."""

    model_config = ConfigDict(extra="forbid")
    max_epochs: PositiveInt = 10
    max_steps: PositiveInt | None = None
    precision: Precision = "32"
    accelerator: Accelerator = "auto"
    devices: PositiveInt = 1
    strategy: Literal["auto", "ddp", "fsdp", "data_parallel"] = "auto"
    compile: bool = False
    cudnn_benchmark: bool | None = Field(
        None, description="cuDNN autotuning for fixed input shapes (torch on CUDA); unset: default"
    )
    matmul_precision: Literal["highest", "high", "medium"] | None = Field(
        None, description="float32 matmuls: high/medium allow TF32 on NVIDIA GPUs; unset: default"
    )
    steps_per_execution: PositiveInt = 1
    accumulate_grad_batches: PositiveInt = Field(
        1,
        description="micro-batches of `data.batch_size` per optimizer step: the same update as "
        "one batch N times larger (Lightning's `accumulate_grad_batches`); steps, schedules and "
        "checkpoints count optimizer steps",
    )
    fast_dev_run: Annotated[StrictBool | StrictInt, AfterValidator(_dev_run)] = Field(
        False,
        description="true or N: run 1 (or N) training and validation batches, one epoch, no "
        "checkpoints or loggers, then stop (a smoke test, as in Lightning)",
    )
    limit_train_batches: TrainLimit | None = Field(
        None,
        description="training batches per epoch: a count, or a fraction (0, 1] of the epoch",
    )
    limit_val_batches: ValLimit | None = Field(
        None,
        description="validation batches per pass: a count (0: no validation), or a fraction",
    )
    val_check_interval: PositiveInt | None = Field(
        None,
        description="also validate every N optimizer steps inside an epoch (the epoch's end "
        "still validates)",
    )
    deterministic: bool = Field(
        False,
        description="reproducible kernels: torch deterministic algorithms, XLA/TF op "
        "determinism; slower (see design.md)",
    )
    log_every_n_steps: PositiveInt = 50
    val_every_n_epochs: PositiveInt = 1
    progress: bool = True
    loggers: list[NamedLogger] = Field(default_factory=lambda: [LoggerSpec(name="csv")])
    early_stopping: EarlyStoppingSpec | None = None
    callbacks: list[NamedCallback] = Field(
        default_factory=list,
        description="registered callbacks by name, e.g. [lr_monitor, {name: timer, max_time: 60}]",
    )
    checkpoint: CheckpointSpec | None = Field(default_factory=CheckpointSpec)
    detect_anomaly: bool = Field(
        True, description="stop on a non-finite loss and never save non-finite parameters"
    )
    on_nan: Literal["raise", "skip"] = Field(
        "raise", description="skip: undo and count steps whose loss is not finite"
    )
    run_dir: str = "runs"

    @model_validator(mode="after")
    def _compatible(self) -> TrainerSpec:
        """Gradient accumulation groups micro-batches itself; fused steps and `on_nan: skip`
        (which undo single steps) would cut its groups. Determinism excludes autotuning."""
        if self.accumulate_grad_batches > 1:
            if self.steps_per_execution > 1:
                raise ValueError(
                    "accumulate_grad_batches > 1 cannot be combined with steps_per_execution > 1"
                )
            if self.on_nan == "skip":
                raise ValueError("accumulate_grad_batches > 1 cannot be combined with on_nan: skip")
        if self.deterministic and self.cudnn_benchmark:
            raise ValueError(
                "deterministic: true cannot be combined with cudnn_benchmark: true "
                "(autotuning picks kernels by timing)"
            )
        return self


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
    optimizer: OptimizerSpec = Field(default_factory=Adam)
    schedule: ScheduleSpec | None = None
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON types) that `load_spec` turns back into an equal spec."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        """The spec as YAML, keys in field order: what a run directory's `spec.yaml` holds."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def override(self, changes: dict[str, Any]) -> Spec:
        """A new spec with dotted keys set (`{"trainer.max_epochs": 3, "model.layers[0].units": 8}`).

        String values are read as YAML scalars (`"3"` → 3), as `--set key=value` does.
        """
        data = self.to_dict()
        callables = {"loss": self.loss.fn, "metrics": [m.fn for m in self.metrics]}
        for key, value in changes.items():
            _set_path(data, key, _override_value(key, value))
        spec = validate_spec(data, source="overrides")
        if callables["loss"] is not None and spec.loss.name == self.loss.name:
            spec.loss.fn = callables["loss"]
        for metric, fn in zip(spec.metrics, callables["metrics"], strict=False):
            metric.fn = metric.fn or fn
        return spec


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
    from .config import MAX_SPEC_DEPTH, check_size

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
    from .config import check_size

    check_size(data, source)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as err:
        raise SpecError(issues_from_validation_error(err, data, Spec), source) from None
    from .resolve import semantic_issues

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
    is taken as already resolved (see `crosstrain.config`).
    """
    from .config import apply_environment, compose, name_origins, read_spec_file

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
