"""Cases for losses and metrics registered by plugins (`registry.losses.add(name, fn)`).

Such a function is an array-API function `fn(xp, outputs, targets, **options)`; it lists what
to check it on in an optional `conformance_cases` attribute:

    focal_loss.conformance_cases = [
        {"targets": "labels", "units": 3},
        {"targets": "probabilities", "units": 4, "options": {"gamma": 1.5}, "extended": True},
    ]

Keys: `targets` (`labels`, `probabilities`, `binary` or `values`; default `values`), `units`
(outputs of the model, default 3, 1 for `binary`), `options` (keyword options of the function),
`extended` (only in the full run, not with `--quick`) and, for a metric, `loss` (the loss to
build with; default `cross_entropy`, `binary_cross_entropy` for binary targets, `mse` for
values). A plugin function without `conformance_cases` shows up as a skipped test saying so.
"""

from __future__ import annotations

from typing import Any

TARGET_KINDS = ("labels", "probabilities", "binary", "values")
DEFAULT_LOSS = {
    "labels": "cross_entropy",
    "probabilities": "cross_entropy",
    "binary": "binary_cross_entropy",
    "values": "mse",
}


def case_id(name: str, options: dict[str, Any], targets: str) -> str:
    """`focal_loss-probabilities-gamma=1.5`: the test id of a case, as for built-ins."""
    extra = "-".join(f"{k}={v}" for k, v in options.items())
    return "-".join(filter(None, [name, targets, extra]))


def plugin_function_cases(kind: str) -> list[Any]:
    """pytest parameters for every loss (`kind="loss"`) or metric (`"metric"`) that a plugin
    registered: `(name, options, units, targets)`, plus the loss to build with for a metric."""
    import pytest
    from crosstrain.nn.losses import BUILTIN_LOSSES
    from crosstrain.nn.metrics import BUILTIN_METRICS
    from crosstrain.plugin.registry import get_registry

    registry = get_registry()
    table, builtin = (
        (registry.losses, BUILTIN_LOSSES) if kind == "loss" else (registry.metrics, BUILTIN_METRICS)
    )
    params = []
    for name in table.names():
        if name in builtin:
            continue
        declared = getattr(table.get(name), "conformance_cases", None)
        if not declared:
            reason = f"plugin {kind} {name} declares no conformance_cases"
            params.append(
                pytest.param(
                    (name, {}, 1, "values", "mse")[: 4 if kind == "loss" else 5],
                    id=f"{name}-no-cases",
                    marks=pytest.mark.skip(reason=reason),
                )
            )
            continue
        for entry in declared:
            params.append(_param(kind, name, dict(entry)))
    return params


def _param(kind: str, name: str, entry: dict[str, Any]) -> Any:
    import pytest

    targets = entry.get("targets", "values")
    if targets not in TARGET_KINDS:
        raise ValueError(
            f"conformance_cases of {kind} {name!r}: targets {targets!r} is not one of "
            f"{', '.join(TARGET_KINDS)}"
        )
    units = int(entry.get("units", 1 if targets == "binary" else 3))
    options = dict(entry.get("options", {}))
    case: tuple[Any, ...] = (name, options, units, targets)
    if kind == "metric":
        case += (entry.get("loss", DEFAULT_LOSS[targets]),)
    marks = [pytest.mark.extended] if entry.get("extended") else []
    return pytest.param(case, id=case_id(name, options, targets), marks=marks)
