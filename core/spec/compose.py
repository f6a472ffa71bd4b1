"""Spec files that build on each other (`extends:`) and the environment's defaults.

A spec file may start from other spec files:

    extends: base.yaml            # or a list: [base.yaml, gpu.yaml] (later ones win)
    trainer: {max_epochs: 3}

The path is relative to the extending file (for a dict or YAML text: to `base_dir`, else the
current directory), a base may extend further files, and a cycle is an error naming the files.
Mappings merge key by key; every other value (lists such as `model.layers`, strings, numbers,
`null`) replaces the base's value whole. A mapping whose `name` or `type` differs from the
base's (another optimizer, loss or schedule) replaces it whole too, since its options belong to
the named thing, and a new `data.source` drops the base's `data.options` for the same reason.

Environment defaults sit between a spec file and the command line: `CROSSTRAIN_BACKEND`
picks the backend (see `crosstrain.api.backend_name`) and `CROSSTRAIN_ACCELERATOR` sets
`trainer.accelerator` when a spec is loaded, so flags, `--set` and `Spec.override` still win.
"""

from __future__ import annotations

import copy
import os
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crosstrain.errors import SpecError, SpecIssue, shown

EXTENDS_KEY = "extends"
ENV_BACKEND = "CROSSTRAIN_BACKEND"
ENV_ACCELERATOR = "CROSSTRAIN_ACCELERATOR"

MAX_SPEC_NODES = 1_000_000
"""The most values (mappings, lists and scalars, each alias counted where it is used) a spec may
hold: a YAML alias bomb expands to billions and is refused before anything walks it."""
MAX_SPEC_DEPTH = 100
"""The deepest nesting of mappings and lists in a spec (32 levels of nested layers need ~66)."""
MAX_SPEC_BYTES = 64 * 1024 * 1024
"""The largest spec file read."""

Leaf = tuple[str | int, ...]
Origins = dict[Leaf, str]
"""For each leaf of a merged spec (a scalar, a list or an empty mapping), the file it came from."""


def merge(base: Any, override: Any, top: bool = True) -> Any:
    """`override` laid over `base`: mappings merge recursively, anything else replaces; below
    the top level (where `name` is the run's), a mapping naming another thing replaces too."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return copy.deepcopy(override)
    renamed = any(k in base and k in override and base[k] != override[k] for k in ("name", "type"))
    if renamed and not top:
        return copy.deepcopy(override)
    if "source" in base and "source" in override and base["source"] != override["source"]:
        base = {k: v for k, v in base.items() if k != "options"}
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = merge(base[key], value, top=False) if key in base else copy.deepcopy(value)
    return merged


def check_size(data: Any, source: str | None = None) -> None:
    """Refuses data that expands to more than MAX_SPEC_NODES values, nests deeper than
    MAX_SPEC_DEPTH, or contains itself (a recursive YAML alias).

    Shared objects (YAML aliases) are sized once and counted at every use, so the expanded size
    of an alias bomb is known without expanding it; the walk is iterative (no recursion).
    """
    containers = (dict, list)
    if not isinstance(data, containers):
        return
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values below and including, height)
    open_ids: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if not children_done and key in sizes:
            continue
        items = node.values() if isinstance(node, dict) else node
        inner = [v for v in items if isinstance(v, containers)]
        if not inner:  # a container of scalars is sized at once
            sizes[key] = (1 + len(items), 1)
            continue
        if children_done:
            below = [sizes[id(v)] for v in inner]
            sizes[key] = (
                1 + len(items) - len(inner) + sum(n for n, _ in below),
                1 + max((h for _, h in below), default=0),
            )
            open_ids.discard(key)
            if sizes[key][0] > MAX_SPEC_NODES:
                break
            continue
        if key in open_ids:
            raise SpecError(SpecIssue("", "a YAML alias refers to itself; specs are trees"), source)
        open_ids.add(key)
        stack.append((node, True))
        stack.extend((v, False) for v in inner)
    values, height = max(sizes.values(), default=(1, 0))
    if values > MAX_SPEC_NODES:
        raise SpecError(
            SpecIssue(
                "",
                f"the spec expands to more than {MAX_SPEC_NODES:,} values (YAML aliases are "
                "counted at each use); refused",
            ),
            source,
        )
    if height > MAX_SPEC_DEPTH:
        raise SpecError(
            SpecIssue("", f"nested deeper than {MAX_SPEC_DEPTH} levels of mappings and lists"),
            source,
        )


def _leaves(data: Any, prefix: Leaf = ()) -> Iterator[Leaf]:
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix


def _contains(data: Any, leaf: Leaf) -> bool:
    node = data
    for part in leaf:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _base_names(value: Any, source: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise SpecError(
        SpecIssue(EXTENDS_KEY, f"expected a spec file path or a list of them, got {shown(value)}"),
        source,
    )


def _read_file(path: Path, chain: tuple[tuple[Path, str], ...]) -> tuple[Any, Origins]:
    """The merged data of the spec file `path` (its bases resolved) and where each leaf came from."""
    from crosstrain.spec.schema import _read_text

    real = path.resolve()
    if real in [seen for seen, _ in chain]:
        names = [shown for _, shown in chain] + [str(path)]
        raise SpecError(SpecIssue(EXTENDS_KEY, f"cycle: {' -> '.join(names)}"), chain[-1][1])
    if not path.is_file():
        if chain:
            raise SpecError(
                SpecIssue(EXTENDS_KEY, f"base spec file not found: {path}"), chain[-1][1]
            )
        raise SpecError(SpecIssue("", f"spec file not found: {path}"))
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(
            SpecIssue("", f"spec file larger than {MAX_SPEC_BYTES // 2**20} MiB: {path}"), str(path)
        )
    data = _read_text(path.read_text(encoding="utf-8"), str(path))
    return compose(data, str(path), path.parent, (*chain, (real, str(path))))


def compose(
    data: Any, source: str, base_dir: Path, chain: tuple[tuple[Path, str], ...] = ()
) -> tuple[Any, Origins]:
    """`data` with the files named in its `extends:` merged under it (paths relative to
    `base_dir`), and the origin of each leaf. Data that is not a mapping is returned as is
    (validation reports it)."""
    if not isinstance(data, dict) or EXTENDS_KEY not in data:
        return data, dict.fromkeys(_leaves(data), source)
    own = {k: v for k, v in data.items() if k != EXTENDS_KEY}
    merged: dict[str, Any] = {}
    origins: Origins = {}
    for name in _base_names(data[EXTENDS_KEY], source):
        base, base_origins = _read_file(base_dir / name, chain or ((Path(), source),))
        if not isinstance(base, dict):
            raise SpecError(
                SpecIssue(
                    "", f"expected a mapping at the top of the spec, got {type(base).__name__}"
                ),
                str(base_dir / name),
            )
        merged = merge(merged, base)
        origins.update(base_origins)
    merged = merge(merged, own)
    origins.update(dict.fromkeys(_leaves(own), source))
    return merged, {leaf: file for leaf, file in origins.items() if _contains(merged, leaf)}


def read_spec_file(path: Path) -> tuple[Any, Origins]:
    """The data of a spec file with its `extends:` chain merged, and each leaf's file."""
    return _read_file(path, ())


def name_origins(err: SpecError, origins: Origins, source: str) -> SpecError:
    """`err` with each issue whose value came from a base file saying `(from <base file>)`."""
    from crosstrain.spec.schema import _split_path

    issues = []
    for issue in err.issues:
        try:
            parts = tuple(_split_path(issue.path)) if issue.path else ()
        except ValueError:  # a key that only looks like an index: report the issue as it is
            parts = ()
        found = next(
            (origins[parts[:n]] for n in range(len(parts), 0, -1) if parts[:n] in origins), None
        )
        if found is not None and found != source:
            issue = SpecIssue(issue.path, f"{issue.message} (from {found})")
        issues.append(issue)
    return SpecError(issues, err.source)


def accelerator_from_env() -> str | None:
    """`CROSSTRAIN_ACCELERATOR` checked against the accelerators a spec accepts (unset or empty:
    None)."""
    value = os.environ.get(ENV_ACCELERATOR, "").strip()
    if not value:
        return None
    from crosstrain.spec.schema import Accelerator

    allowed = typing.get_args(Accelerator)
    if value not in allowed:
        raise SpecError(
            SpecIssue(
                "trainer.accelerator",
                f"environment variable {ENV_ACCELERATOR}={value!r} is not one of {', '.join(allowed)}",
            )
        )
    return value


def apply_environment(spec: Any) -> Any:
    """`spec` with the environment's defaults applied (`CROSSTRAIN_ACCELERATOR`)."""
    accelerator = accelerator_from_env()
    if accelerator is None or spec.trainer.accelerator == accelerator:
        return spec
    trainer = spec.trainer.model_copy(update={"accelerator": accelerator})
    return spec.model_copy(update={"trainer": trainer})
