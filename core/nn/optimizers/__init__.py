"""Optimizers written once: each a class with its options, slots and array-API rule.

`crosstrain.nn.optimizers.base` defines the shape (`Optimizer`, `update_tree`,
`reference_step`); one file per family holds the built-ins. Plugins add their own with
`crosstrain.register_optimizer` or the `crosstrain_add_optimizers` hook, and a spec may name
one as `optimizer: {name: "package.module:Class"}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import WrapValidator
from pydantic_core import PydanticCustomError

from .adafactor import Adafactor
from .adagrad import Adadelta, Adagrad
from .adam import Adam, AdamW
from .base import (
    Optimizer,
    ParamOptions,
    clip_by_global_norm,
    decoupled,
    l2,
    reference_step,
    update_tree,
)
from .groups import ParamGroup, group_issues, param_kind, resolve_param_options
from .lion import Lion
from .rmsprop import RMSprop
from .sgd import SGD

BUILTIN_OPTIMIZERS: tuple[type[Optimizer], ...] = (
    SGD,
    Adam,
    AdamW,
    RMSprop,
    Adagrad,
    Adadelta,
    Adafactor,
    Lion,
)


def optimizer_name(cls: type[Optimizer]) -> str:
    """The name a spec gives the optimizer class (its `name` field's default)."""
    field = cls.model_fields.get("name")
    if field is None or not isinstance(field.default, str):
        raise TypeError(f"{cls.__name__} needs a field `name: Literal['<name>'] = '<name>'`")
    return field.default


def _reference(reference: str) -> type[Optimizer]:
    """The Optimizer class a `package.module:Class` name imports, registered under its own
    name (so the validated spec, and a checkpoint's copy of it, name no module)."""
    from crosstrain.plugin.registry import get_registry, import_reference

    try:
        cls = import_reference(reference, "optimizer")
    except ImportError as err:
        raise PydanticCustomError("optimizer", "{message}", {"message": str(err)}) from None
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise PydanticCustomError(
            "optimizer",
            "{reference} is not a crosstrain.nn.optimizers.Optimizer subclass",
            {"reference": reference},
        )
    table = get_registry().optimizers
    if table.find(optimizer_name(cls)) is not cls:
        with get_registry().owner("spec"):
            table.add(cls)
    return cls


def validate_optimizer(value: Any) -> Optimizer:
    """An Optimizer from an Optimizer, a name (`adam`) or a `{name: ..., **options}` mapping,
    the name looked up in the registry (plugins' optimizers and `package.module:Class`)."""
    from crosstrain.plugin.registry import get_registry

    if isinstance(value, Optimizer):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise PydanticCustomError(
            "optimizer",
            "expected an optimizer mapping with a 'name' key, got {got}",
            {"got": repr(value)},
        )
    table = get_registry().optimizers
    cls = table.find(str(value["name"]))
    if cls is None and ":" in str(value["name"]):
        cls = _reference(str(value["name"]))
        value = {**value, "name": optimizer_name(cls)}
    if cls is None:
        raise PydanticCustomError(
            "optimizer", "{message}", {"message": table.unknown(str(value["name"]))}
        )
    return cls.model_validate(value)


def _validate(value: Any, handler: Any) -> Optimizer:
    return validate_optimizer(value)


AnyOptimizer = Annotated[Any, WrapValidator(_validate)]
"""The spec's `optimizer`: any registered Optimizer, by name with its options."""


def slot_names(opt: Optimizer) -> tuple[str, ...]:
    """The canonical slots this optimizer keeps per parameter."""
    return opt.slot_names()


__all__ = [
    "BUILTIN_OPTIMIZERS",
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "AnyOptimizer",
    "Lion",
    "Optimizer",
    "ParamGroup",
    "ParamOptions",
    "RMSprop",
    "clip_by_global_norm",
    "group_issues",
    "param_kind",
    "resolve_param_options",
    "decoupled",
    "l2",
    "optimizer_name",
    "reference_step",
    "slot_names",
    "update_tree",
    "validate_optimizer",
]
