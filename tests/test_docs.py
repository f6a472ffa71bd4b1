"""Runs the code of the documentation (docs/*.md and README.md), so the docs cannot rot.

Conventions for fenced blocks (the info string is the language, then optional tags):

- ```python — run, in order, in ONE Python interpreter per page, so the blocks of a page share
  their names. Each page runs in a fresh temporary directory holding a copy of `examples/`
  (without build outputs), so `examples/digits_mlp.yaml` and `runs/` work as in the repo root.
- ```console, ```bash, ```sh — every line `$ crosstrain ...` runs as a real CLI subprocess
  (a trailing `\\` continues the line; `NAME=value` prefixes set environment variables) and must
  exit 0. The lines shown below a command, up to the next `$` line, are expected output: each
  must appear in the command's stdout or stderr (whitespace runs compare as one space, `...`
  matches anything). `$ pip install PATH...` installs into a directory private to the page that
  is on PYTHONPATH for everything after it (`--no-deps --no-build-isolation --target`), so the
  venv is never touched. Any other `$` command is an error unless the block is `no-run`.
  Lines without `$` in a block that has no command are output samples, never run.
- `no-run` — shown, never run: other libraries' code (a Lightning module, Keras `model.fit`),
  commands that need hardware or a network, or write into the repository. A `python no-run`
  block is still compiled, so it must be valid Python.
- `file=PATH` — the block is written to PATH (relative to the page's directory) when the page
  reaches it, and not run. Use it for spec files and a plugin's source files.
- `same-as=PATH` — the block must equal the repository file PATH (e.g. an example spec shown in
  full); it is compared, not run, so a copy in the docs cannot drift from the file.
- Any other language (yaml, toml, text, none) is shown only.

docs/design.md and docs/decisions.md are not run: the contract and its log, whose code is sketches.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from crosstrain.spec.reference import slug

ROOT = Path(__file__).resolve().parents[1]
NOT_RUN_PAGES = {"docs/design.md", "docs/decisions.md"}
PAGES = sorted(
    str(p.relative_to(ROOT))
    for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    if str(p.relative_to(ROOT)) not in NOT_RUN_PAGES
)
COMMAND_LANGUAGES = {"console", "bash", "sh", "shell"}
SENTINEL = "@@crosstrain-docs-block-done@@"
BLOCK_TIMEOUT = 300


@dataclass
class Block:
    """One fenced code block of a page."""

    language: str
    tags: set[str]
    file: str | None
    code: str
    line: int
    """1-based line of the opening fence."""
    same_as: str | None = None

    @property
    def runs(self) -> bool:
        return "no-run" not in self.tags and self.file is None and self.same_as is None


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order (``` fences, optionally indented)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,})(.*)$", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.groups()
        words = info.split()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{fence}\s*$", lines[j]):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise AssertionError(f"line {i + 1}: code block is never closed")
        tags = set(words[1:])
        file = next((t.split("=", 1)[1] for t in tags if t.startswith("file=")), None)
        same_as = next((t.split("=", 1)[1] for t in tags if t.startswith("same-as=")), None)
        tags = {t for t in tags if not t.startswith(("file=", "same-as="))}
        language = words[0] if words else ""
        code = "\n".join(body) + "\n"
        blocks.append(Block(language, tags, file, code, i + 1, same_as))
        i = j + 1
    return blocks


@dataclass
class Command:
    """A `$ ...` line of a console block and the output lines the doc shows below it."""

    argv: list[str]
    env: dict[str, str]
    expected: list[str] = field(default_factory=list)
    text: str = ""


def parse_commands(block: Block) -> list[Command]:
    """The commands of a console block, with `\\` continuations joined."""
    commands: list[Command] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            text = line[2:]
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            words = shlex.split(text, comments=True)
            env = {}
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                name, _, value = words.pop(0).partition("=")
                env[name] = value
            commands.append(Command(words, env, text=text))
        elif commands and line.strip():
            commands[-1].expected.append(line)
        i += 1
    return commands


def expected_line_found(expected: str, output: str) -> bool:
    """Whether the shown line appears in the output (`...` is a wildcard, spaces collapse)."""
    pattern = ".*".join(re.escape(" ".join(part.split())) for part in expected.split("..."))
    return any(re.search(pattern, " ".join(line.split())) for line in output.splitlines())


DRIVER = rf"""
import json as _json, sys as _sys, traceback as _traceback
for _line in _sys.stdin:
    _block = _json.loads(_line)
    try:
        exec(compile(_block["code"], _block["where"], "exec"), globals())
        _status = "ok"
    except BaseException:
        _traceback.print_exc()
        _status = "failed"
    _sys.stdout.flush()
    _sys.stderr.flush()
    print("\n{SENTINEL} " + _status, flush=True)
"""


class PageRunner:
    """Runs the blocks of one page in its own directory, Python blocks in one interpreter."""

    def __init__(self, page: str, workdir: Path):
        self.page = page
        self.workdir = workdir
        self.site = workdir / ".doc-site-packages"
        self.site.mkdir()
        self.env = {**os.environ, "PYTHONPATH": str(self.site), "PYTHONUNBUFFERED": "1"}
        self.python: subprocess.Popen[str] | None = None

    def close(self) -> None:
        if self.python is not None:
            self.python.stdin.close()  # type: ignore[union-attr]
            try:
                self.python.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.python.kill()

    def run(self, block: Block) -> None:
        where = f"{self.page}:{block.line}"
        if block.same_as is not None:
            original = (ROOT / block.same_as).read_text(encoding="utf-8")
            assert block.code == original, f"{where}: the block differs from {block.same_as}"
        if block.file is not None:
            target = self.workdir / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")
        elif not block.runs:
            if block.language == "python":  # shown only, but it must still be valid Python
                compile(block.code, where, "exec")
            return
        elif block.language == "python":
            self.run_python(block.code, where)
        elif block.language in COMMAND_LANGUAGES:
            for command in parse_commands(block):
                self.run_command(command, where)

    def run_python(self, code: str, where: str) -> None:
        if self.python is None:
            self.python = subprocess.Popen(
                [sys.executable, "-c", DRIVER],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        process = self.python
        watchdog = threading.Timer(BLOCK_TIMEOUT, process.kill)
        watchdog.start()
        try:
            process.stdin.write(json.dumps({"code": code, "where": where}) + "\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
            output: list[str] = []
            for line in process.stdout:  # type: ignore[union-attr]
                if line.startswith(SENTINEL):
                    if line.split()[-1] != "ok":
                        pytest.fail(f"python block at {where} failed:\n{''.join(output)[-4000:]}")
                    return
                output.append(line)
            pytest.fail(f"python block at {where}: interpreter died:\n{''.join(output)[-4000:]}")
        finally:
            watchdog.cancel()

    def run_command(self, command: Command, where: str) -> None:
        program, *args = command.argv
        if program == "crosstrain":
            script = Path(sys.executable).with_name("crosstrain")
            argv = [str(script)] if script.exists() else [sys.executable, "-m", "crosstrain.cli"]
        elif program == "pip" and args[:1] == ["install"]:
            argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
            args = ["--no-build-isolation", "--target", str(self.site), *args[1:]]
        else:
            pytest.fail(
                f"{where}: `$ {command.text}` is not a crosstrain command; tag the block no-run"
            )
        done = subprocess.run(
            argv + args,
            cwd=self.workdir,
            env={**self.env, **command.env},
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, (
            f"{where}: `$ {command.text}` exited {done.returncode}:\n{output[-4000:]}"
        )
        missing = [line for line in command.expected if not expected_line_found(line, output)]
        assert not missing, (
            f"{where}: `$ {command.text}` did not print {missing!r}; it printed:\n{output[-4000:]}"
        )


def copy_examples(workdir: Path) -> None:
    shutil.copytree(
        ROOT / "examples",
        workdir / "examples",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "runs"),
    )


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page: str, tmp_path: Path) -> None:
    copy_examples(tmp_path)
    runner = PageRunner(page, tmp_path)
    try:
        for block in parse_blocks((ROOT / page).read_text(encoding="utf-8")):
            start = time.perf_counter()
            runner.run(block)
            if block.runs and block.language in {"python", *COMMAND_LANGUAGES}:
                print(f"{page}:{block.line} {block.language} {time.perf_counter() - start:.1f} s")
    finally:
        runner.close()


def headings(path: Path) -> set[str]:
    """The anchors GitHub makes for the headings of a Markdown file (code blocks left out)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("page", [*PAGES, *sorted(NOT_RUN_PAGES)])
def test_page_links_resolve(page: str) -> None:
    """Relative links of a page point to files (and Markdown headings) that exist; URLs are not
    checked."""
    text = (ROOT / page).read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path, _, anchor = target.partition("#")
        linked = (ROOT / page).parent.joinpath(path) if path else ROOT / page
        if (
            anchor
            and linked.suffix == ".md"
            and linked.is_file()
            and anchor not in headings(linked)
        ):
            broken.append(target)
        if (
            path
            and not re.match(r"^[a-z]+:", path)
            and not (ROOT / page).parent.joinpath(path).exists()
        ):
            broken.append(target)
    assert not broken, f"{page}: links to missing files or headings: {broken}"


def test_parser_reads_tags_commands_and_expected_output() -> None:
    text = (
        "intro\n```python no-run\nimport lightning\n```\n"
        "```yaml file=specs/a.yaml\nname: a\n```\n"
        "```console\n$ CROSSTRAIN_X=1 crosstrain fit a.yaml \\\n    --set trainer.max_epochs=1\n"
        "final metrics:\n  val_loss ...\n$ crosstrain backends\n```\n"
    )
    no_run, spec_file, console = parse_blocks(text)
    assert (no_run.language, no_run.runs) == ("python", False)
    assert (spec_file.file, spec_file.code, spec_file.runs) == ("specs/a.yaml", "name: a\n", False)
    fit, backends = parse_commands(console)
    assert fit.env == {"CROSSTRAIN_X": "1"}
    assert fit.argv == ["crosstrain", "fit", "a.yaml", "--set", "trainer.max_epochs=1"]
    assert fit.expected == ["final metrics:", "  val_loss ..."] and backends.expected == []
    assert expected_line_found("  val_loss ...", "final metrics:\n  val_loss      1.5\n")
    assert not expected_line_found("val_accuracy ...", "val_loss 1.5")
