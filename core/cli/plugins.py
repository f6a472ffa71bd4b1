"""`crosstrain backends` and `crosstrain plugins`: what the registry holds, as tables."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from crosstrain.plugin.command import Command, no_arguments
from crosstrain.plugin.registry import Registry, get_registry
from crosstrain.spec.summary import format_table

REGISTRATION_TABLES = (
    "backends",
    "layers",
    "optimizers",
    "schedules",
    "losses",
    "metrics",
    "data_sources",
    "data_adapters",
    "loggers",
    "callbacks",
    "launchers",
    "commands",
)


def backend_row(name: str, backend: Any) -> list[str]:
    """`[name, installed, version, accelerators, note]` for the `backends` table; an installed
    backend's note is its `Backend.note` (e.g. which Keras engine is fastest)."""
    try:
        available, reason = backend.is_available()
        version = backend.version() or "-"
    except Exception as err:  # one backend's bug must not hide the other rows
        return [name, "?", "-", "-", f"{type(err).__name__}: {err}"]
    if not available:
        return [name, "no", version, "-", f"{reason}; pip install 'crosstrain[{backend.extra}]'"]
    try:
        found = ", ".join(backend.accelerators_found()) or "-"
    except Exception as err:
        found = f"error: {type(err).__name__}: {err}"
    return [name, "yes", version, found, backend.note]


NOTE_WIDTH = 60


def cmd_backends(args: argparse.Namespace) -> int:
    registry = get_registry()
    rows = [backend_row(name, registry.backends.get(name)) for name in registry.backends.names()]
    installed = [row[0] for row in rows if row[1] == "yes"]
    long_notes = [(row[0], row[4]) for row in rows if len(row[4]) > NOTE_WIDTH]
    for row in rows:  # the table stays narrow; a long note is printed whole below it
        if len(row[4]) > NOTE_WIDTH:
            row[4] = textwrap.shorten(row[4], NOTE_WIDTH, placeholder=" ...")
    if rows:
        print(format_table(["Backend", "Installed", "Version", "Accelerators", "Note"], rows))
    else:
        print("no backend is registered")
    for name, note in long_notes:
        print(f"\n{name}:\n" + textwrap.fill(note, 96, initial_indent="  ", subsequent_indent="  "))
    for name in installed:
        details = registry.backends.get(name).accelerator_details()
        if not details:
            continue
        print(f"\n{name}:")
        for accelerator, devices, precisions in details:
            print(f"  {accelerator:<5} {devices}  precisions: {', '.join(precisions)}")
    if registry.broken:
        print(f"\n{len(registry.broken)} plugin(s) failed to load; `crosstrain plugins` says why")
    return 0


def _registered_by(registry: Registry, plugin: str) -> list[str]:
    lines = []
    for attribute in REGISTRATION_TABLES:
        table = getattr(registry, attribute)
        names = [n for n, owner in table.owners.items() if owner == plugin]
        if names:
            lines.append(f"{attribute.replace('_', ' ')}: {', '.join(names)}")
    module = registry.pm.get_plugin(plugin)
    callers = registry.pm.get_hookcallers(module) if module is not None else None
    hooks = sorted(c.name for c in callers or [] if not c.name.startswith("crosstrain_add_"))
    if hooks:
        lines.append(f"hooks: {', '.join(hooks)}")
    return lines


def _indented(text: str, indent: str = "      ") -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent + "  ")


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = get_registry()
    print(f"loaded plugins ({len(registry.loaded)}):")
    width = max((len(name) for name, _ in registry.loaded), default=0)
    for name, entry_point in registry.loaded:
        print(f"  {name:<{width}}  {entry_point}")
        for line in _registered_by(registry, name) or ["registers nothing"]:
            print(_indented(line))
    if registry.broken:
        print(f"\nbroken plugins ({len(registry.broken)}):")
        for broken in registry.broken:
            print(f"  {broken.name}  {broken.entry_point or '-'}")
            print(_indented(broken.error))
    return 0


COMMANDS = (
    Command(
        "backends",
        "registered backends: installed, version, accelerators",
        no_arguments,
        cmd_backends,
    ),
    Command(
        "plugins",
        "loaded plugins, what each registered, and broken ones",
        no_arguments,
        cmd_plugins,
    ),
)
