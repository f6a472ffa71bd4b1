"""`crosstrain summary SPEC`: the model of a spec as a table of layers (nothing is built)."""

from __future__ import annotations

import argparse

from crosstrain.cli.fit import read_spec
from crosstrain.plugin.command import Command
from crosstrain.spec.summary import summary


def cmd_summary(args: argparse.Namespace) -> int:  # the table is the result: printed even with -q
    print(summary(read_spec(args.spec)))
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec file (YAML or JSON)")


COMMANDS = (
    Command("summary", "the model of a spec as a table of layers", _configure, cmd_summary),
)
