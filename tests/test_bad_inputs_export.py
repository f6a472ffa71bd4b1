"""Issue 14, export: `crosstrain export` writes only inside its output directory.

A checkpoint can hold any spec name (it is re-signed here as an attacker who knows the format
would do); export builds its default file name from it, so a name that is not one path
segment, or a symbolic link where the file goes, must be refused before anything is written.
One row per case, on the real command line: exit code, message, and no file changed outside
the working directory's `out/` (and nothing at all in the sibling directory `outside/`, where
the hostile names point).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import crosstrain as ct
import pytest
from bad_inputs import Refusal, assert_refused, changed_files, run_cli, snapshot
from conftest import tiny_spec
from crosstrain.checkpoint.checks import DIGEST_KEY
from crosstrain.checkpoint.format import read_checkpoint, write_checkpoint

WRITTEN_BY_WRITER = ("format", "format_version", "step", "created", "files", "rng", DIGEST_KEY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The state and trainer.json of a 1-epoch torch run of the tiny spec."""
    root = tmp_path_factory.mktemp("trained")
    result = ct.fit(
        tiny_spec(trainer={"max_epochs": 1, "progress": False}),
        backend="torch",
        run_dir=root / "run",
    )
    return read_checkpoint(result.last_checkpoint)


def signed_checkpoint(root: Path, trained: tuple, name: object) -> Path:
    """A valid checkpoint (sha256 and digest right) whose stored spec is named `name`."""
    state, meta = trained
    info = {k: v for k, v in meta.items() if k not in WRITTEN_BY_WRITER}
    info["spec"] = {**meta["spec"], "name": name}
    return write_checkpoint(root, state, info)


@pytest.fixture
def place(tmp_path: Path, trained: tuple):
    """`(cwd, outside, victim)`: a working directory and a sibling directory with a file that
    a hostile name or link points at."""
    cwd, outside = tmp_path / "work", tmp_path / "outside"
    cwd.mkdir()
    outside.mkdir()
    victim = outside / "victim.safetensors"
    victim.write_text("do not overwrite")
    return cwd, outside, victim


def _setup(case: str, cwd: Path, outside: Path, victim: Path, trained: tuple) -> str:
    """Prepares the row's checkpoint (and links) in `cwd`; returns the command line."""
    step = trained[0].step
    names = {
        "absolute_name": str(outside / "evil"),
        "dotdot_name": "../outside/evil",
        "nested_name": "sub/evil",
        "dotdot_only": "..",
        "empty_name": "",
        "backslash_name": "..\\outside\\evil",
        "long_name": "n" * 300,
        "control_char_name": "evil\nname",
        "dir_output_bad_name": "../outside/evil",
        "file_output_bad_name": "../outside/evil",
    }
    ckpt = signed_checkpoint(cwd / "ckpt", trained, names.get(case, "tiny"))
    line = f"export {ckpt.relative_to(cwd)} --to torch"
    if case == "file_output_bad_name":
        return line + " --output out/model.safetensors"
    if case == "spec_option_bad_name":
        (cwd / "bad.json").write_text(json.dumps(tiny_spec(name="../outside/evil")))
        return line + " --spec bad.json"
    if case == "dir_output_bad_name":
        (cwd / "out").mkdir()
        return line + " --output out/"
    if case == "symlink_default_file":
        os.symlink(victim, cwd / f"tiny-step-{step}.safetensors")
    if case == "symlink_output_file":
        (cwd / "out").mkdir()
        os.symlink(victim, cwd / "out" / "model.safetensors")
        return line + " --output out/model.safetensors"
    if case == "output_is_a_directory":  # the default file name is taken by a directory
        (cwd / f"tiny-step-{step}.safetensors").mkdir()
    if case == "unknown_format":
        return line.replace("--to torch", "--to tflite")
    return line


SEGMENT = "must be one path segment"


def _refused(*fragments: str) -> Refusal:
    """Exit 2 with `fragments`, and no file written anywhere (not even under out/)."""
    return Refusal(2, fragments, may_write=())


STORED = "trainer.json: spec.name"
"""A stored name is refused when the checkpoint is read (`state_checks`), before export."""
CASES = {
    "absolute_name": _refused(STORED, SEGMENT, "'/' is not allowed"),
    "dotdot_name": _refused(STORED, SEGMENT, "'/' is not allowed"),
    "nested_name": _refused(STORED, "'sub/evil'", SEGMENT),
    "dotdot_only": _refused(STORED, "'..'", "not empty, '.' or '..'"),
    "empty_name": _refused(STORED, "''", "not empty"),
    "backslash_name": _refused(STORED, SEGMENT, "'\\\\' is not allowed"),
    "long_name": _refused(STORED, "longer than 100 characters"),
    "control_char_name": _refused(STORED, SEGMENT, "'\\n' is not allowed"),
    "dir_output_bad_name": _refused(STORED, SEGMENT),
    "file_output_bad_name": _refused(STORED, SEGMENT),
    "spec_option_bad_name": _refused("bad.json", "name", SEGMENT),
    "symlink_default_file": _refused("outside", "symbolic link", "only inside"),
    "symlink_output_file": _refused("symbolic link", "only inside"),
    "output_is_a_directory": _refused("is a directory"),
    "unknown_format": _refused("no backend exports 'tflite'", "torch", "flax", "keras"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_export_refuses(case: str, place: tuple, trained: tuple) -> None:
    cwd, outside, victim = place
    line = _setup(case, cwd, outside, victim, trained)
    before, outside_before = snapshot(cwd), snapshot(outside)
    done = run_cli(line, cwd)
    assert_refused(done, CASES[case], before, cwd, outside, outside_before)
    assert victim.read_text() == "do not overwrite"
    assert not (outside / "evil-step-1.safetensors").exists()


ACCEPTED = {
    "default_name_in_cwd": ("", "tiny", "tiny-step-{step}.safetensors"),
    "output_file": ("--output out/model.safetensors", "tiny", "out/model.safetensors"),
    "output_dir": ("--output out/", "tiny", "out/tiny-step-{step}.safetensors"),
    "output_dir_created": ("--output new/dir/", "tiny", "new/dir/tiny-step-{step}.safetensors"),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_export_writes_exactly_one_file_in_its_directory(
    case: str, place: tuple, trained: tuple
) -> None:
    cwd, outside, _victim = place
    options, name, expected = ACCEPTED[case]
    expected = expected.format(step=trained[0].step)
    ckpt = signed_checkpoint(cwd / "ckpt", trained, name)
    before, outside_before = snapshot(cwd), snapshot(outside)
    done = run_cli(f"export {ckpt.relative_to(cwd)} --to torch {options}", cwd)
    assert done.returncode == 0, done.stderr
    assert changed_files(before, snapshot(cwd)) == {expected}
    assert snapshot(outside) == outside_before
    assert expected in done.stdout
    shutil.rmtree(cwd / "ckpt")
    assert {p.name for p in cwd.iterdir()} <= {"out", "new", expected}  # no other file or directory


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ""])
def test_output_path_checks_the_name_again(name: str, tmp_path: Path) -> None:
    """Defence in depth: the file name is checked where it is made, whoever made the spec."""
    from crosstrain.cli.export import output_path
    from crosstrain.errors import CrosstrainError

    with pytest.raises(CrosstrainError, match="one path segment"):
        output_path(tmp_path, name, 3, ".safetensors")
    assert output_path(tmp_path, "ok", 3, ".s") == tmp_path / "ok-step-3.s"
