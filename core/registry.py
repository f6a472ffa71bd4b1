"""The plugin host: one pluggy PluginManager and the tables that plugins fill.

`build_registry` is the whole wiring: add the hookspecs, register the built-in plugins, load
the `crosstrain` entry points one by one (a plugin that fails is recorded as broken, the rest
keep working), check every hookimpl against a spec, then let each plugin fill the tables.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy
from pydantic_core import PydanticCustomError

from . import hookspecs
from ._spec_errors import suggest

T = TypeVar("T")

DEFAULT_PLUGINS: tuple[str, ...] = (
    "crosstrain.plugins.builtins",
    "crosstrain.plugins.sources",
    "crosstrain.plugins.data_adapters",
    "crosstrain.plugins.csv_logger",
    "crosstrain.plugins.tensorboard_logger",
    "crosstrain.plugins.mlflow_logger",
    "crosstrain.plugins.wandb_logger",
    "crosstrain.plugins.monitors",
    "crosstrain.backends.torch",
    "crosstrain.backends.jax",
    "crosstrain.backends.keras",
)
"""Built-in plugins, registered like third-party ones; each can be blocked by name."""

ENTRY_POINT_GROUP = "crosstrain"


def package_version(distribution: str) -> str | None:
    """An installed distribution's version from its metadata (no import), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


class NameTable(Generic[T]):
    """Named entries of one kind (layers, losses, ...), with helpful lookup errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self.owners: dict[str, str] = {}
        self._owner = "crosstrain"

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered by {self.owners[name]}")
        self._entries[name] = entry
        self.owners[name] = self._owner

    def find(self, name: str) -> T | None:
        return self._entries.get(name)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: str) -> str:
        return f"unknown {self.kind} {name!r}{suggest(name, self.names())} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


class LayerTable(NameTable[type]):
    def add(self, layer_class: type, name: str | None = None) -> None:  # type: ignore[override]
        super().add(name or layer_class.model_fields["type"].default, layer_class)


@dataclass
class BrokenPlugin:
    """A plugin that failed to load or register, and why."""

    name: str
    entry_point: str
    error: str


class Registry:
    """Everything plugins registered, and the PluginManager that calls the lifecycle hooks."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.backends: NameTable[Any] = NameTable("backend")
        self.layers = LayerTable("layer type")
        self.losses: NameTable[Any] = NameTable("loss")
        self.metrics: NameTable[Any] = NameTable("metric")
        self.data_sources: NameTable[Any] = NameTable("data source")
        self.data_adapters: NameTable[Any] = NameTable("data adapter")
        self.loggers: NameTable[Any] = NameTable("logger")
        self.callbacks: NameTable[Any] = NameTable("callback")
        self.broken: list[BrokenPlugin] = []
        self.loaded: list[tuple[str, str]] = []

    def validate_layer(self, value: Any) -> Any:
        """A Layer from a Layer or a `{type: ...}` mapping (used by the spec's layer lists)."""
        from .layers import Layer

        if isinstance(value, Layer):
            return value
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "layer",
                "expected a layer mapping with a 'type' key, got {got}",
                {"got": repr(value)},
            )
        if "type" not in value:
            raise PydanticCustomError(
                "layer",
                "a layer needs a 'type' (one of {known})",
                {"known": ", ".join(self.layers.names())},
            )
        layer_class = self.layers.find(value["type"])
        if layer_class is None:
            raise PydanticCustomError(
                "layer", "{message}", {"message": self.layers.unknown(value["type"])}
            )
        return layer_class.model_validate(value)

    def backend(self, name: str) -> Any:
        """The backend registered as `name` (`keras:jax` → the `keras` backend)."""
        base = name.split(":", 1)[0]
        if base not in self.backends:
            from .errors import CrosstrainError

            raise CrosstrainError(self.backends.unknown(base))
        return self.backends.get(base)


def _call_each(registry: Registry, hook_name: str, tables: list[NameTable[Any]]) -> None:
    """Calls every implementation of a registration hook separately, so one failure is isolated."""
    caller = getattr(registry.pm.hook, hook_name)
    for impl in caller.get_hookimpls():  # registration order: built-ins win a name clash
        for table in tables:
            table._owner = impl.plugin_name
        try:
            result = impl.function(*[registry for _ in impl.argnames])
            if hook_name == "crosstrain_add_backends":
                for backend in result or []:
                    registry.backends.add(backend.name, backend)
        except Exception as err:  # a plugin's bug must not take the others down
            registry.broken.append(
                BrokenPlugin(
                    impl.plugin_name, "", f"{hook_name} failed: {type(err).__name__}: {err}"
                )
            )
            _roll_back(registry, impl.plugin_name)


def _roll_back(registry: Registry, plugin_name: str) -> None:
    """Removes everything a half-registered plugin added, and the plugin itself."""
    for table in (
        registry.backends,
        registry.layers,
        registry.losses,
        registry.metrics,
        registry.data_sources,
        registry.data_adapters,
        registry.loggers,
        registry.callbacks,
    ):
        for name in [n for n, owner in table.owners.items() if owner == plugin_name]:
            del table._entries[name], table.owners[name]
    entry_point = next((v for n, v in registry.loaded if n == plugin_name), "")
    registry.loaded = [(n, v) for n, v in registry.loaded if n != plugin_name]
    for broken in registry.broken:
        if broken.name == plugin_name and not broken.entry_point:
            broken.entry_point = entry_point
    if registry.pm.has_plugin(plugin_name):
        registry.pm.unregister(name=plugin_name)


def build_registry(only: list[str] | None = None, blocked: list[str] | None = None) -> Registry:
    """Makes the PluginManager, registers built-ins and entry points, fills the tables.

    Args:
        only: load only plugins with these names (built-in module names or entry-point names).
        blocked: never load these.
    """
    pm = pluggy.PluginManager("crosstrain")
    pm.add_hookspecs(hookspecs)
    registry = Registry(pm)
    blocked = set(blocked or []) | set(
        filter(None, os.environ.get("CROSSTRAIN_BLOCK_PLUGINS", "").split(","))
    )

    def wanted(name: str) -> bool:
        return name not in blocked and (
            only is None or name in only or name.rsplit(".", 1)[-1] in only
        )

    for module_name in DEFAULT_PLUGINS:
        if wanted(module_name):
            try:
                pm.register(importlib.import_module(module_name), name=module_name)
                registry.loaded.append((module_name, "built-in"))
            except Exception as err:
                registry.broken.append(
                    BrokenPlugin(module_name, "built-in", f"{type(err).__name__}: {err}")
                )
    if not os.environ.get("CROSSTRAIN_DISABLE_PLUGIN_AUTOLOAD"):
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if not wanted(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                pm.register(ep.load(), name=ep.name)
                pm.check_pending()
                registry.loaded.append((ep.name, ep.value))
            except Exception as err:
                plugin = pm.get_plugin(ep.name)
                if plugin is not None:
                    pm.unregister(plugin)
                registry.broken.append(
                    BrokenPlugin(ep.name, ep.value, f"{type(err).__name__}: {err}")
                )
    pm.check_pending()
    _call_each(registry, "crosstrain_add_backends", [registry.backends])
    _call_each(registry, "crosstrain_add_layers", [registry.layers])
    _call_each(registry, "crosstrain_add_losses", [registry.losses])
    _call_each(registry, "crosstrain_add_metrics", [registry.metrics])
    _call_each(registry, "crosstrain_add_data_sources", [registry.data_sources])
    _call_each(registry, "crosstrain_add_data_adapters", [registry.data_adapters])
    _call_each(registry, "crosstrain_add_loggers", [registry.loggers])
    _call_each(registry, "crosstrain_add_callbacks", [registry.callbacks])
    for broken in registry.broken:
        if not broken.entry_point:
            broken.entry_point = next((v for n, v in registry.loaded if n == broken.name), "")
    return registry


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replaces the process-wide registry (None: rebuild on next use), e.g. for `--plugins`."""
    global _REGISTRY
    _REGISTRY = registry
