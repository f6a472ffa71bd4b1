"""One harness for the bad-input tables (tests/test_bad_inputs_*.py).

Each case runs the real `crosstrain` command line in a fresh working directory and asserts the
three things a refused input must do: exit with the expected code, print one clear `error: ...`
naming what is wrong (no traceback), and change no file outside the directories the command may
write (`runs/` and whatever the case names).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


def run_cli(
    line: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m crosstrain.cli LINE` (split like a shell) in `cwd`, output captured, no tty."""
    full_env = {k: v for k, v in os.environ.items() if k != "CROSSTRAIN_BACKEND"} | (env or {})
    command = [sys.executable, "-m", "crosstrain.cli", *shlex.split(line)]
    return subprocess.run(
        command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file below `root`, by relative path."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def changed_files(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Paths added, removed or rewritten between two snapshots."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


@dataclass
class Refusal:
    """What a refused input must produce: exit `code`, every fragment in stderr, and no change
    outside `may_write` (paths relative to the working directory, prefixes)."""

    code: int = 2
    fragments: tuple[str, ...] = ()
    may_write: tuple[str, ...] = ("runs/",)
    max_stderr_lines: int = 3
    extra: dict = field(default_factory=dict)


def assert_refused(
    done: subprocess.CompletedProcess[str],
    expected: Refusal,
    before: dict[str, str],
    cwd: Path,
    outside: Path | None = None,
    outside_before: dict[str, str] | None = None,
) -> None:
    """The checks every row of a bad-input table makes; `outside` is a directory that must not
    change at all (e.g. the parent a path-traversal name points into)."""
    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == expected.code, report
    assert "Traceback" not in done.stderr, report
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, report
    assert len(done.stderr.strip().splitlines()) <= expected.max_stderr_lines, report
    for fragment in expected.fragments:
        assert fragment in done.stderr, f"missing {fragment!r}\n{report}"
    changed = changed_files(before, snapshot(cwd))
    stray = {p for p in changed if not any(p.startswith(m) for m in expected.may_write)}
    assert not stray, f"files changed outside {expected.may_write}: {sorted(stray)}\n{report}"
    if outside is not None:
        assert snapshot(outside) == (outside_before or {}), f"{outside} changed\n{report}"
