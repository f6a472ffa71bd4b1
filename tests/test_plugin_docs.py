"""docs/writing-plugins.md and the code agree: the hook tables list every hook of
core/plugin/hookspecs.py with exactly its arguments (each argument besides `trainer`/`registry`
described in its row), and the trainer attribute table lists exactly the attributes a real
Trainer has after a fit."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import crosstrain as ct
import pytest
from conftest import tiny_spec
from crosstrain.plugin import hookspecs

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "writing-plugins.md"
SELF_EXPLAINED = {"trainer", "registry"}
"""Arguments described once above the tables, not in every row."""


def section(title: str) -> str:
    """The text of one `## ` section of the page."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def table_rows(text: str) -> dict[str, str]:
    """First cell (without backticks) → the whole row, for every table row of `text`."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = line
    return rows


def declared_hooks() -> dict[str, list[str]]:
    """Every hookspec of crosstrain.plugin.hookspecs → its argument names, in order."""
    return {
        name: list(inspect.signature(fn).parameters)
        for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, "crosstrain_spec")
    }


def test_every_hook_is_documented_with_its_arguments():
    rows = table_rows(section("The hooks"))
    documented = {}
    for cell, row in rows.items():
        call = re.fullmatch(r"(\w+)\(([\w, ]*)\)", cell)
        assert call, f"hook cell {cell!r} is not `name(arguments)`"
        documented[call[1]] = ([a.strip() for a in call[2].split(",") if a.strip()], row)
    declared = declared_hooks()
    assert len(declared) >= 17  # the registration, per-fit and lifecycle hooks
    missing = sorted(set(declared) - set(documented))
    assert not missing, f"hooks missing from {PAGE.name} 'The hooks': {missing}"
    unknown = sorted(set(documented) - set(declared))
    assert not unknown, (
        f"{PAGE.name} documents hooks that core/plugin/hookspecs.py lacks: {unknown}"
    )
    for name, arguments in declared.items():
        shown, row = documented[name]
        assert shown == arguments, f"{name}: the page shows {shown}, hookspecs declare {arguments}"
        _, _, described = row.partition(f"`{name}({', '.join(shown)})`")
        for argument in set(arguments) - SELF_EXPLAINED:
            assert f"`{argument}`" in described, f"{name}: argument {argument} is not described"


@pytest.fixture(scope="module")
def fitted_trainer():
    """The Trainer of a real two-epoch fit on torch, as `on_fit_end` sees it."""
    seen = {}

    class Capture(ct.Callback):
        def on_fit_end(self, trainer):
            seen["trainer"] = trainer

    ct.fit(tiny_spec(), backend="torch", callbacks=[Capture()], run_dir=False)
    return seen["trainer"]


def test_trainer_attributes_are_the_documented_ones(fitted_trainer):
    documented = set(table_rows(section("What a callback can read on the trainer")))
    assert {"epoch", "global_step", "history", "should_stop", "spec", "program"} <= documented
    absent = sorted(name for name in documented if not hasattr(fitted_trainer, name))
    assert not absent, f"documented but not on a Trainer: {absent}"
    public = {name for name in vars(fitted_trainer) if not name.startswith("_")}
    undocumented = sorted(public - documented)
    assert not undocumented, f"Trainer attributes missing from {PAGE.name}: {undocumented}"
    assert fitted_trainer.epoch == 2 and fitted_trainer.global_step == fitted_trainer.total_steps
    assert len(fitted_trainer.history) == 2 and fitted_trainer.should_stop is False
