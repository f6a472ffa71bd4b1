"""The `crosstrain` command: fit, evaluate, predict, summary, backends, plugins, schema.

Every subcommand calls the Python API (`crosstrain.api`). Deliberate errors (a bad spec, a
missing framework, a broken checkpoint ...) print as `error: ...` on stderr without a
traceback and exit 2 (1 when training itself failed, 130 on Ctrl-C, 143 on SIGTERM); `--traceback` shows the
full traceback instead.

Example:
    $ crosstrain fit examples/digits_mlp.yaml --backend torch --set trainer.max_epochs=3
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from crosstrain import api
from crosstrain.cli.fit import fit_overrides, parse_sets  # noqa: F401 (public here too)
from crosstrain.errors import WORKER_ERROR_DIR_ENV, CrosstrainError, Terminated, TrainingError
from crosstrain.output import configure_output
from crosstrain.plugin.command import Command
from crosstrain.plugin.registry import Registry, build_registry, set_registry
from crosstrain.train.workers import end_worker

EXIT_ERROR = 2
EXIT_TRAINING_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


# -- spec handling ------------------------------------------------------------------------------


# -- subcommands --------------------------------------------------------------------------------


# -- parser -------------------------------------------------------------------------------------


BUILTIN_COMMANDS = (
    "crosstrain.cli.fit",
    "crosstrain.cli.inference",
    "crosstrain.cli.generate",
    "crosstrain.cli.summary",
    "crosstrain.cli.plugins",
    "crosstrain.cli.schema",
    "crosstrain.cli.export",
    "crosstrain.cli.conformance",
    "crosstrain.cli.compare",
    "crosstrain.cli.lr_find",
    "crosstrain.cli.imports",
)
"""Modules that each expose `COMMANDS`, a tuple of `crosstrain.plugin.command.Command`: the
built-in subcommands, in `crosstrain --help` order. They import no framework at module level."""


def builtin_commands() -> list[Command]:
    """The `COMMANDS` of every module in `BUILTIN_COMMANDS`, in order."""
    return [c for name in BUILTIN_COMMANDS for c in importlib.import_module(name).COMMANDS]


def build_parser(registry: Registry | None = None) -> argparse.ArgumentParser:
    """The argument parser of the `crosstrain` command: the built-in commands, then those of
    `registry.commands` (plugins' `crosstrain_add_commands`) when a registry is given."""
    from crosstrain import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=-1,
        default=0,
        help="only results, warnings and errors (no model table, progress or file notes)",
    )
    loudness.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=1,
        help="debug lines too, and the frameworks' own log lines (TensorFlow/XLA C++ logs)",
    )
    common.add_argument(
        "--plugins",
        metavar="A,B",
        help="load only these plugins (names as `crosstrain plugins` lists them)",
    )
    common.add_argument(
        "--no-plugin",
        action="append",
        metavar="NAME",
        help="never import this plugin (repeatable; built-ins included)",
    )
    parser = argparse.ArgumentParser(
        prog="crosstrain", description="One training spec, every framework."
    )
    parser.add_argument("--version", action="version", version=f"crosstrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(command: Command) -> None:
        parser = sub.add_parser(
            command.name, parents=[common], help=command.help, description=command.help
        )
        parser.set_defaults(handler=command.run)
        command.configure(parser)

    taken: set[str] = set()
    for command in builtin_commands():
        add(command)
        taken.add(command.name)
    for name in registry.commands.names() if registry is not None else []:
        command = registry.commands.get(name)
        if name in taken:
            owner = registry.commands.owners.get(name, "?")
            print(
                f"warning: plugin {owner!r}: command {name!r} is built in; the plugin's is skipped",
                file=sys.stderr,
            )
            continue
        add(command)
    return parser


def _builtin_command(words: list[str]) -> bool:
    """Whether the command word is a built-in one: plugins then load only when used (or when
    `--plugins`/`--no-plugin` ask), as before; any other word may be a plugin's command."""
    first = next((w for w in words if not w.startswith("-")), None)
    return first in {command.name for command in builtin_commands()}


def _plugin_options(words: list[str]) -> tuple[str | None, list[str] | None]:
    """`--plugins` and `--no-plugin` read before the parser exists (plugins add commands)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--plugins")
    early.add_argument("--no-plugin", action="append")
    known, _ = early.parse_known_args(words)
    return known.plugins, known.no_plugin


def _use_plugins(names: str | None, blocked: list[str] | None = None) -> Registry:
    only = [n.strip() for n in names.split(",") if n.strip()] if names else None
    registry = build_registry(only=only, blocked=blocked)
    set_registry(registry)
    known = [name for name, _ in registry.loaded] + [b.name for b in registry.broken]
    for wanted in only or []:
        if not any(wanted in (name, name.rsplit(".", 1)[-1]) for name in known):
            print(f"warning: --plugins: no plugin named {wanted!r} was found", file=sys.stderr)
    return registry


def _report(err: BaseException) -> None:
    message = str(err).strip() or type(err).__name__
    errors_dir = os.environ.get(WORKER_ERROR_DIR_ENV)
    if errors_dir and "RANK" in os.environ:  # a worker: the launcher prints it once for all ranks
        path = Path(errors_dir) / f"rank-{os.environ['RANK']}.txt"
        try:
            path.write_text(message + "\n", encoding="utf-8")
            return
        except OSError:
            pass
    print(f"error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Args:
        argv: the arguments after the program name (default `sys.argv[1:]`).
    """
    words = list(sys.argv[1:] if argv is None else argv)
    registry = None if _builtin_command(words) else _use_plugins(*_plugin_options(words))
    parser = build_parser(registry)
    try:
        args = parser.parse_args(words)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    args.argv = words
    configure_output(args.verbosity)
    try:
        if registry is None and (args.plugins or args.no_plugin):
            _use_plugins(args.plugins, args.no_plugin)
        return args.handler(args)
    except KeyboardInterrupt as err:
        if args.traceback:
            raise
        terminated = isinstance(err, Terminated)
        print("\nterminated" if terminated else "\ninterrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CrosstrainError, OSError, ValueError) as err:  # OSError: a disk or file fault
        if args.traceback:
            raise
        _report(err)
        return EXIT_TRAINING_FAILED if isinstance(err, TrainingError) else EXIT_ERROR


def run() -> None:
    """The `crosstrain` command (console script and `python -m crosstrain.cli.main`)."""
    status = main()
    if os.environ.get(api.DISTRIBUTED_WORKER_ENV):
        end_worker(status)
    raise SystemExit(status)
