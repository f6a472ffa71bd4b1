"""Every subcommand is a `crosstrain.plugin.command.Command`: the built-ins come from the
`COMMANDS` of the modules in `BUILTIN_COMMANDS`, a plugin adds its own through
`crosstrain_add_commands`, and both are put on the parser by the same code."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from crosstrain.cli.main import BUILTIN_COMMANDS, build_parser
from crosstrain.plugin.command import Command
from test_cli import make_plugin, run_cli

HELLO_COMMAND = """
from crosstrain.plugin.command import Command
from crosstrain.plugin.hookspecs import hookimpl


def configure(parser):
    parser.add_argument("who")
    parser.add_argument("--times", type=int, default=1)


def run(args):
    for _ in range(args.times):
        print(f"hello {args.who}")
    return 3 if args.who == "error" else 0


@hookimpl
def crosstrain_add_commands(registry):
    registry.commands.add("hello", Command("hello", "greets someone", configure, run))
    registry.commands.add("fit", Command("fit", "tries to take fit", configure, run))
"""


def test_every_builtin_module_exposes_commands_and_the_names_are_listed():
    names = []
    for module_name in BUILTIN_COMMANDS:
        commands = importlib.import_module(module_name).COMMANDS
        assert commands and all(isinstance(c, Command) for c in commands), module_name
        names += [c.name for c in commands]
    assert len(names) == len(set(names)), names
    assert {"fit", "config", "evaluate", "predict", "summary", "schema", "export"} <= set(names)
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert list(choices) == names  # --help order: the modules' order


def test_builtin_commands_import_no_framework():
    code = (
        "import sys\n"
        "from crosstrain.cli.main import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in ('torch', 'jax', 'keras', 'tensorflow') if m in sys.modules))\n"
    )
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_plugin_command_runs_and_shows_in_help_and_plugins(tmp_path: Path):
    make_plugin(tmp_path / "site", "helloplug", HELLO_COMMAND)
    env = {"PYTHONPATH": str(tmp_path / "site")}
    done = run_cli("hello world --times 2", tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hello world", "hello world"]
    assert run_cli("hello error", tmp_path, env).returncode == 3  # its exit status is kept

    shown = run_cli("--help", tmp_path, env)
    assert shown.returncode == 0 and "hello" in shown.stdout and "greets someone" in shown.stdout
    listed = run_cli("plugins", tmp_path, env)
    assert "commands: hello, fit" in listed.stdout, listed.stdout

    # a built-in name cannot be taken: the built-in runs, the plugin's is skipped with a warning
    clash = run_cli("hello x", tmp_path, env)
    assert "command 'fit' is built in; the plugin's is skipped" in clash.stderr
    assert "tries to take fit" not in run_cli("--help", tmp_path, env).stdout


def test_a_plugin_command_is_gone_when_its_plugin_is_not_loaded(tmp_path: Path):
    make_plugin(tmp_path / "site", "helloplug", HELLO_COMMAND)
    env = {"PYTHONPATH": str(tmp_path / "site")}
    done = run_cli("hello world --no-plugin helloplug", tmp_path, env)
    assert done.returncode == 2
    assert "invalid choice: 'hello'" in done.stderr
    unknown = run_cli("helo world", tmp_path, env)
    assert unknown.returncode == 2 and "invalid choice: 'helo'" in unknown.stderr
