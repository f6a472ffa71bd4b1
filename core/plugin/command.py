"""`Command`: one subcommand of the `crosstrain` command line, built-in or a plugin's.

Every built-in module of `crosstrain.cli` exposes `COMMANDS`, a tuple of these; a plugin adds
its own in `crosstrain_add_commands(registry)` with `registry.commands.add(name, command)`.
Both go through the same code in `crosstrain.cli.main.build_parser`: a parser with the common
options (`--traceback`, `-q`/`-v`, `--plugins`, `--no-plugin`), `configure(parser)` adds the
command's own arguments, and `run(args)` is called with the parsed arguments. It returns the
exit status; a `CrosstrainError` it raises prints as `error: ...` and exits 2.

Example:
    >>> def configure(parser):
    ...     parser.add_argument("spec")
    >>> def run(args):
    ...     print(f"{args.spec} looks fine")
    ...     return 0
    >>> Command("lint", "check a spec without training", configure, run).name
    'lint'
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """`configure` of a command that takes no arguments of its own."""


@dataclass(frozen=True)
class Command:
    """A subcommand: `crosstrain <name> ...`.

    Attributes:
        name: the word after `crosstrain`; a built-in command's name cannot be taken.
        help: one line for `crosstrain --help` and the command's own help.
        configure: adds the command's arguments to its `argparse` parser. It runs for
            `crosstrain --help` too, so it must import no ML framework.
        run: does the work with the parsed arguments; returns the exit status.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
