"""Checks that need the registry (names of losses, sources, loggers; shapes), and turning the
validated spec into live objects: the loss and metric functions, the data."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crosstrain.data.arrays import split
from crosstrain.errors import DataError, SpecError, SpecIssue
from crosstrain.plugin.registry import NameTable, get_registry
from crosstrain.spec.messages import issues_from_validation_error
from pydantic import ValidationError

if TYPE_CHECKING:
    from crosstrain.spec.schema import FunctionSpec, Spec


def _check_options(fn: Callable[..., Any], options: dict[str, Any], path: str) -> list[SpecIssue]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    params = list(signature.parameters.values())[3:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    known = {p.name for p in params}
    return [
        SpecIssue(
            f"{path}.options.{k}",
            f"unknown option; {fn.__name__} takes {sorted(known) or 'no options'}",
        )
        for k in options
        if k not in known
    ]


def _function_issues(fs: FunctionSpec, table: NameTable[Any], path: str) -> list[SpecIssue]:
    if fs.fn is not None:
        return []
    if ":" in fs.name:
        module, _, attr = fs.name.partition(":")
        if not module or not attr.isidentifier():
            return [
                SpecIssue(f"{path}.name", f"expected 'package.module:function', got {fs.name!r}")
            ]
        return []
    if fs.name not in table:
        return [SpecIssue(path, table.unknown(fs.name) + "; or give 'package.module:function'")]
    return _check_options(table.get(fs.name), fs.options, path)


def semantic_issues(spec: Spec) -> list[SpecIssue]:
    """Every problem pydantic cannot see alone; an empty list when the spec is sound."""
    registry = get_registry()
    issues: list[SpecIssue] = []
    if spec.model is not None:
        from crosstrain.nn.model import plan

        try:
            plan(spec.model)
        except SpecError as err:
            issues.extend(err.issues)
        else:
            from crosstrain.nn.optimizers import group_issues

            issues += [SpecIssue(p, m) for p, m in group_issues(spec.optimizer, spec.model)]
    issues += _function_issues(spec.loss, registry.losses, "loss")
    for index, metric in enumerate(spec.metrics):
        issues += _function_issues(metric, registry.metrics, f"metrics[{index}]")
    if spec.data.source is not None:
        issues += _source_issues(spec)
    elif spec.data.options:
        issues.append(SpecIssue("data.options", "options given but no data.source"))
    from crosstrain.spec.stateful import spec_issues

    issues += [SpecIssue(path, message) for path, message in spec_issues(spec)]
    for index, item in enumerate(spec.trainer.loggers):
        issues += _logger_issues(item, registry.loggers, f"trainer.loggers[{index}]")
    for index, item in enumerate(spec.trainer.callbacks):
        issues += _callback_issues(item, registry.callbacks, f"trainer.callbacks[{index}]")
    return issues


def _callback_issues(item: Any, table: NameTable[Any], path: str) -> list[SpecIssue]:
    """An unknown callback name, or options its `options_model` refuses (one issue per field)."""
    factory = table.find(item.name)
    if factory is None:
        return [SpecIssue(f"{path}.name", table.unknown(item.name))]
    model = getattr(factory, "options_model", None)
    if model is None:
        return []
    try:
        model.model_validate(item.options)
    except ValidationError as err:
        return [
            SpecIssue(f"{path}{'.' + i.path if i.path else ''}", i.message)
            for i in issues_from_validation_error(err, item.options, model)
        ]
    return []


def _logger_issues(item: Any, table: NameTable[Any], path: str) -> list[SpecIssue]:
    """An unknown logger name, options refused by its `options_model`, or options given to a
    logger that has none (its factory is called as `factory(run_dir, spec)`)."""
    factory = table.find(item.name)
    if factory is None:
        return [SpecIssue(path, table.unknown(item.name))]
    if getattr(factory, "options_model", None) is None:
        return [
            SpecIssue(f"{path}.{key}", f"unknown option; logger {item.name!r} takes no options")
            for key in item.options
        ]
    return _callback_issues(item, table, path)


def _source_issues(spec: Spec) -> list[SpecIssue]:
    registry = get_registry()
    kind, _, argument = spec.data.source.partition(":")
    source = registry.data_sources.find(kind)
    if source is None:
        return [
            SpecIssue(
                "data.source", registry.data_sources.unknown(kind) + " (write '<kind>:<argument>')"
            )
        ]
    try:
        source.check(argument)
    except ValueError as err:
        return [SpecIssue("data.source", str(err))]
    try:
        source.options.model_validate(spec.data.options)
    except ValidationError as err:
        return [
            SpecIssue(f"data.options{'.' + i.path if i.path else ''}", i.message)
            for i in issues_from_validation_error(err, spec.data.options, source.options)
        ]
    return []


def resolve_function(fs: FunctionSpec, kind: str, path: str) -> Callable[..., Any]:
    """The callable `fn(xp, outputs, targets)` with its options bound.

    A `package.module:function` name is imported here, only for a spec the user passed.
    """
    if fs.fn is not None:
        fn = fs.fn
    elif ":" in fs.name:
        module_name, _, attr = fs.name.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise SpecError(SpecIssue(path, f"cannot load {kind} {fs.name!r}: {err}")) from None
        issues = _check_options(fn, fs.options, path)
        if issues:
            raise SpecError(issues)
    else:
        table = get_registry().losses if kind == "loss" else get_registry().metrics
        fn = table.get(fs.name)
    return functools.partial(fn, **fs.options) if fs.options else fn


TOKEN_METRICS = frozenset({"accuracy", "perplexity"})
"""Built-in metrics that take the loss's `ignore_index` unless given their own."""


def token_options(spec: Spec, metric: FunctionSpec) -> FunctionSpec:
    """`metric` with the loss's `ignore_index` (per-token targets: padding the loss skips is
    not counted by `accuracy` or `perplexity` either) unless the metric sets its own."""
    ignore = spec.loss.options.get("ignore_index")
    if ignore is None or metric.name not in TOKEN_METRICS or "ignore_index" in metric.options:
        return metric
    return metric.model_copy(update={"options": {**metric.options, "ignore_index": ignore}})


def metric_functions(spec: Spec) -> dict[str, Callable[..., Any]]:
    """Metric name (as it appears in `<split>_<name>`) → bound function."""
    named = {}
    for index, metric in enumerate(spec.metrics):
        metric = token_options(spec, metric)
        key = metric.name.rsplit(":", 1)[-1]
        if metric.name == "top_k_accuracy" and "k" in metric.options:
            key = f"top_{metric.options['k']}_accuracy"
        named[key] = resolve_function(metric, "metric", f"metrics[{index}]")
    return named


def load_data(spec: Spec, data: Any = None, val_data: Any = None) -> tuple[Any, Any]:
    """Training and validation data: explicit data wins, else `data.source` (split by
    `validation_split`). Each is ArrayData, or `batches.Batches` for loaders and iterables
    (never split: their validation data comes as `val_data`)."""
    from crosstrain.data.arrays import check_array_kinds
    from crosstrain.data.batches import Batches, as_data
    from crosstrain.data.inputs import check_input_ids, check_input_shape
    from crosstrain.data.targets import check_targets
    from crosstrain.data.windows import TokenWindows

    if data is not None:
        train = check_finite(as_data(data, "data", spec), "data")
        if val_data is not None:
            return train, check_finite(as_data(val_data, "val_data", spec), "val_data")
        if isinstance(train, Batches):
            return train, None
        return split(train, spec.data.validation_split, spec.seed)
    if spec.data.source is None:
        raise SpecError(
            SpecIssue("data.source", "no data: give data.source in the spec or pass data=(x, y)")
        )
    kind, _, argument = spec.data.source.partition(":")
    source = get_registry().data_sources.get(kind)
    where = f"data.source {spec.data.source!r}"
    try:
        loaded = source.load(argument, source.options.model_validate(spec.data.options), spec.seed)
    except DataError as err:
        if argument in str(err) or str(err).startswith("data."):
            raise
        raise DataError(f"{where}: {err}") from None  # e.g. ArrayData's 0-d array
    check_array_kinds(loaded, where)
    check_input_shape(loaded.x, spec, where)
    if isinstance(loaded, TokenWindows):  # ids in range by the vocabulary; values: one window
        loaded.check_model(spec)
        check_targets(loaded.y[:1], spec, where)
    else:
        check_input_ids(loaded.x, spec, where)
        check_targets(loaded.y, spec, where)
    check_finite(loaded, f"data.source {spec.data.source!r}")
    train, val = split(loaded, spec.data.validation_split, spec.seed)
    if val_data is not None:
        val = check_finite(as_data(val_data, "val_data", spec), "val_data")
    return train, val


def check_finite(data: Any, where: str) -> Any:
    """`data` unchanged when its floating arrays hold only finite values, else a DataError naming
    the array (`x`, `y`) and the first row with NaN or infinity. Memory-mapped arrays are not
    read here (time to the first step must not grow with the data set): the data is marked
    `unchecked` and each batch is checked as it is drawn (`arrays.check_drawn`). Loaders and
    iterables (Batches) pass: their batches are not read here."""
    from crosstrain.data.arrays import ArrayData, check_finite_rows, memory_mapped

    arrays = [(name, getattr(data, name, None)) for name in ("x", "y")]
    if isinstance(data, ArrayData) and any(memory_mapped(a) for _, a in arrays):
        data.unchecked = where
        return data
    for name, array in arrays:
        check_finite_rows(array, name, where)
    return data
