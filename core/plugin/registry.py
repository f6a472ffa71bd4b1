"""The plugin host: one pluggy PluginManager and the tables that plugins fill.

`build_registry` is the whole wiring: add the hookspecs, register the built-in plugins, load
the `crosstrain` entry points one by one (a plugin that fails is recorded as broken, the rest
keep working), check every hookimpl against a spec, then let each plugin fill the tables.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.metadata
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy
from crosstrain.errors import suggest
from crosstrain.plugin import hookspecs

T = TypeVar("T")

DEFAULT_PLUGINS: tuple[str, ...] = (
    "crosstrain.plugins.builtins",
    "crosstrain.plugins.sources",
    "crosstrain.plugins.text_sources",
    "crosstrain.plugins.data_adapters",
    "crosstrain.plugins.csv_logger",
    "crosstrain.plugins.tensorboard_logger",
    "crosstrain.plugins.mlflow_logger",
    "crosstrain.plugins.wandb_logger",
    "crosstrain.plugins.monitors",
    "crosstrain.plugins.ray_launcher",
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


_REFERENCES_REFUSED: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "crosstrain_references_refused", default=None
)


@contextlib.contextmanager
def references_refused(why: str) -> Iterator[None]:
    """Within this block, a `package.module:Name` reference is an error instead of an import
    (e.g. while validating the spec stored in a checkpoint, which must never import code)."""
    token = _REFERENCES_REFUSED.set(why)
    try:
        yield
    finally:
        _REFERENCES_REFUSED.reset(token)


def import_reference(reference: str, kind: str) -> Any:
    """The object a `package.module:Name` reference names (imported here).

    Raises:
        ImportError: the module or the name cannot be loaded, the text is not a reference, or
            references are refused here (`references_refused`).
    """
    module_name, _, attr = reference.partition(":")
    if not module_name or not all(part.isidentifier() for part in [*module_name.split("."), attr]):
        raise ImportError(f"expected 'package.module:Name' for a {kind}, got {reference!r}")
    refused = _REFERENCES_REFUSED.get()
    if refused is not None:
        raise ImportError(f"{kind} {reference!r} is not imported: {refused}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"cannot load {kind} {reference!r}: {err}") from None


class NameTable(Generic[T]):
    """Named entries of one kind (layers, losses, ...), with helpful lookup errors.

    A table with `references=True` also answers a `package.module:Name` name with the object
    it imports from there (loggers and callbacks named in a spec that way).
    """

    def __init__(self, kind: str, references: bool = False):
        self.kind = kind
        self.references = references
        self._entries: dict[str, T] = {}
        self.owners: dict[str, str] = {}
        self._owner = "crosstrain"

    def check_free(self, name: object) -> None:
        """ValueError when `name` is already taken (checked before anything else is wrong)."""
        if isinstance(name, str) and name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered by {self.owners[name]}")

    def add(self, name: str, entry: T) -> None:
        self.check_free(name)
        self._entries[name] = entry
        self.owners[name] = self._owner

    def find(self, name: str) -> T | None:
        if not isinstance(name, str):  # a spec's `type: [Dense]`: unknown, not a TypeError
            return None
        if name in self._entries or not (self.references and ":" in name):
            return self._entries.get(name)
        try:
            return import_reference(name, self.kind)
        except ImportError:
            return None

    def get(self, name: str) -> T:
        found = self.find(name)
        if found is None:
            raise KeyError(self.unknown(name))
        return found

    def unknown(self, name: str) -> str:
        if self.references and ":" in name:
            try:
                import_reference(name, self.kind)
            except ImportError as err:
                return str(err)
        return f"unknown {self.kind} {name!r}{suggest(name, self.names())} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or (isinstance(name, str) and self.find(name) is not None)


class LayerTable(NameTable[type]):
    def add(self, layer_class: type, name: str | None = None) -> None:  # type: ignore[override]
        super().add(name or layer_class.model_fields["type"].default, layer_class)


class ClassTable(NameTable[type]):
    """Optimizer or schedule classes by the name a spec gives them (their `name` field's
    default); `base` is the class each must subclass."""

    def __init__(self, kind: str, base: str):
        super().__init__(kind)
        self.base = base

    def add(self, cls: type, name: str | None = None) -> None:  # type: ignore[override]
        module, _, attr = self.base.rpartition(".")
        base = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{cls!r} is not a {self.base} subclass")
        field = cls.model_fields.get("name")
        own = field.default if field is not None else None
        if not isinstance(own, str):
            raise TypeError(f"{cls.__name__} needs a field `name: Literal['<name>'] = '<name>'`")
        if name is not None and name != own:
            raise ValueError(
                f"{self.kind} {cls.__name__} is named {own!r} by its `name`, not {name!r}"
            )
        super().add(own, cls)


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
        self.optimizers = ClassTable("optimizer", "crosstrain.nn.optimizers.Optimizer")
        self.schedules = ClassTable("schedule", "crosstrain.nn.schedules.Schedule")
        self.losses: NameTable[Any] = NameTable("loss")
        self.metrics: NameTable[Any] = NameTable("metric")
        self.data_sources: NameTable[Any] = NameTable("data source")
        self.data_adapters: NameTable[Any] = NameTable("data adapter")
        self.loggers: NameTable[Any] = NameTable("logger", references=True)
        self.callbacks: NameTable[Any] = NameTable("callback", references=True)
        self.launchers: NameTable[Any] = NameTable("launcher")
        self.commands: NameTable[Any] = NameTable("command")
        self.broken: list[BrokenPlugin] = []
        self.loaded: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def owner(self, name: str) -> Iterator[None]:
        """Entries added within this block are recorded as added by `name`."""
        tables = [v for v in vars(self).values() if isinstance(v, NameTable)]
        previous = [t._owner for t in tables]
        for table in tables:
            table._owner = name
        try:
            yield
        finally:
            for table, before in zip(tables, previous, strict=True):
                table._owner = before

    def backend(self, name: str) -> Any:
        """The backend registered as `name` (`keras:jax` → the `keras` backend)."""
        base = name.split(":", 1)[0]
        if base not in self.backends:
            from crosstrain.errors import CrosstrainError

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
                from crosstrain.plugin.protocol_wrap import as_backend

                for backend in result or []:
                    registry.backends.check_free(getattr(backend, "name", None))
                    wrapped = as_backend(backend)  # PluginError names missing members
                    registry.backends.add(wrapped.name, wrapped)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # a plugin's bug (even sys.exit) must not take the others down
            registry.broken.append(
                BrokenPlugin(
                    impl.plugin_name, "", f"{hook_name} failed: {type(err).__name__}: {err}"
                )
            )
            _roll_back(registry, impl.plugin_name)


def _roll_back(registry: Registry, plugin_name: str) -> None:
    """Removes everything a half-registered plugin added, and the plugin itself."""
    for table in [t for t in vars(registry).values() if isinstance(t, NameTable)]:
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
            except KeyboardInterrupt:
                raise
            except BaseException as err:
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
            except KeyboardInterrupt:
                raise
            except BaseException as err:  # SystemExit at import too: listed as broken
                plugin = pm.get_plugin(ep.name)
                if plugin is not None:
                    pm.unregister(plugin)
                registry.broken.append(
                    BrokenPlugin(ep.name, ep.value, f"{type(err).__name__}: {err}")
                )
    pm.check_pending()
    _call_each(registry, "crosstrain_add_backends", [registry.backends])
    _call_each(registry, "crosstrain_add_layers", [registry.layers])
    _call_each(registry, "crosstrain_add_optimizers", [registry.optimizers])
    _call_each(registry, "crosstrain_add_schedules", [registry.schedules])
    _call_each(registry, "crosstrain_add_losses", [registry.losses])
    _call_each(registry, "crosstrain_add_metrics", [registry.metrics])
    _call_each(registry, "crosstrain_add_data_sources", [registry.data_sources])
    _call_each(registry, "crosstrain_add_data_adapters", [registry.data_adapters])
    _call_each(registry, "crosstrain_add_loggers", [registry.loggers])
    _call_each(registry, "crosstrain_add_callbacks", [registry.callbacks])
    _call_each(registry, "crosstrain_add_launchers", [registry.launchers])
    _call_each(registry, "crosstrain_add_commands", [registry.commands])
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


# -- registration at run time (public as `crosstrain.register_*`) --------------------------------


def _register(table_name: str, name: str, entry: Any) -> Any:
    registry = get_registry()
    with registry.owner("runtime"):
        getattr(registry, table_name).add(name, entry)
    return entry


def register_layer(layer_class: type[T], name: str | None = None) -> type[T]:
    """Adds a layer type (a `crosstrain.nn.layers.Layer` subclass) without a plugin.

    Usable as a class decorator. Example:
        >>> import crosstrain as ct
        >>> @ct.register_layer                                   # doctest: +SKIP
        ... class Square(ct.layers.Layer):
        ...     type: Literal["Square"] = "Square"
        ...     def forward(self, xp, params, x, training=False, rng=None):
        ...         return x * x

    Raises:
        ValueError: the type name is already registered.
    """
    registry = get_registry()
    with registry.owner("runtime"):
        registry.layers.add(layer_class, name)
    return layer_class


def register_optimizer(name: str | type[T], cls: type[T] | None = None) -> type[T]:
    """Adds an optimizer class (a `crosstrain.nn.optimizers.Optimizer` subclass) without a
    plugin: `register_optimizer("mine", Mine)`, `register_optimizer(Mine)` or `@register_optimizer`.

    Raises:
        ValueError: the name is taken, or differs from the class's own `name`.
    """
    return _register_class("optimizers", name, cls)


def register_schedule(name: str | type[T], cls: type[T] | None = None) -> type[T]:
    """Adds a learning-rate schedule class (a `crosstrain.nn.schedules.Schedule` subclass)
    without a plugin, as `register_optimizer` does.

    Raises:
        ValueError: the name is taken, or differs from the class's own `name`.
    """
    return _register_class("schedules", name, cls)


def _register_class(table: str, name: Any, cls: Any) -> Any:
    if cls is None:
        name, cls = None, name
    registry = get_registry()
    with registry.owner("runtime"):
        getattr(registry, table).add(cls, name)
    return cls


def register_loss(name: str, fn: T) -> T:
    """Adds a loss `fn(xp, outputs, targets, **options)` under `name`; returns `fn`."""
    return _register("losses", name, fn)


def register_metric(name: str, fn: T) -> T:
    """Adds a metric `fn(xp, outputs, targets, **options)` under `name`; returns `fn`."""
    return _register("metrics", name, fn)


def register_callback(name: str, factory: T) -> T:
    """Adds a callback for `trainer.callbacks`; `factory(options, spec, run_dir)` makes it."""
    return _register("callbacks", name, factory)


def register_logger(name: str, factory: T) -> T:
    """Adds a logger for `trainer.loggers`; `factory(run_dir, spec)` makes it."""
    return _register("loggers", name, factory)


def register_data_source(kind: str, source: T) -> T:
    """Adds a data source for `data.source: "<kind>:<argument>"`; returns `source`."""
    return _register("data_sources", kind, source)
