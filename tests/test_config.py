"""Config habits: `extends:` chains, `CROSSTRAIN_ACCELERATOR`, `--set` with several pairs and
`--print-config` / `crosstrain config` (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_spec
from crosstrain.cli.main import build_parser, fit_overrides
from crosstrain.errors import SpecError
from crosstrain.spec.schema import load_spec


def write(directory: Path, name: str, data: dict | str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_env_defaults(monkeypatch):
    monkeypatch.delenv("CROSSTRAIN_ACCELERATOR", raising=False)
    monkeypatch.delenv("CROSSTRAIN_BACKEND", raising=False)


def test_extends_merges_mappings_and_replaces_lists_and_named_things(tmp_path):
    base = tiny_spec(optimizer={"name": "adam", "lr": 0.05, "beta_1": 0.8})
    base["data"]["batch_size"] = 16
    write(tmp_path, "specs/base.yaml", base)
    write(tmp_path, "specs/middle.yaml", {"extends": "base.yaml", "trainer": {"max_epochs": 7}})
    child = {
        "extends": "specs/middle.yaml",
        "name": "child",
        "trainer": {"precision": "64"},
        "model": {"layers": [{"type": "Dense", "units": 5}]},
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "data": {"source": "random:regression", "options": {"samples": 64, "features": 8}},
    }
    spec = load_spec(write(tmp_path, "child.yaml", child))
    assert spec.name == "child"
    assert spec.trainer.max_epochs == 7 and spec.trainer.precision == "64"  # merged
    assert spec.trainer.log_every_n_steps == 2  # from the base, two files up
    assert tuple(spec.model.input_shape) == (8,)  # merged under the replaced layers
    assert [layer.units for layer in spec.model.layers] == [5]  # list replaced whole
    assert spec.optimizer.name == "sgd" and spec.optimizer.lr != 0.05  # adam's options dropped
    assert spec.data.batch_size == 16 and spec.data.options == {"samples": 64, "features": 8}


def test_extends_for_dicts_is_relative_to_base_dir(tmp_path):
    write(tmp_path, "base.yaml", tiny_spec())
    spec = load_spec({"extends": "base.yaml", "seed": 3}, base_dir=tmp_path)
    assert spec.seed == 3 and spec.name == "tiny"
    with pytest.raises(SpecError, match="base spec file not found: nowhere/base.yaml"):
        load_spec({"extends": "base.yaml"}, base_dir="nowhere")


def test_extends_cycle_names_the_files(tmp_path):
    write(tmp_path, "a.yaml", {"extends": "b.yaml"})
    write(tmp_path, "b.yaml", {"extends": ["c.yaml"]})
    write(tmp_path, "c.yaml", {"extends": "a.yaml"})
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "a.yaml")
    message = str(caught.value)
    assert "extends: cycle:" in message
    assert all(name in message for name in ("a.yaml ->", "b.yaml ->", "c.yaml -> ")), message


def test_errors_in_a_base_file_name_the_base_file(tmp_path):
    bad = tiny_spec()
    bad["model"]["layers"][0]["units"] = -4
    write(tmp_path, "base.yaml", bad)
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "seed": "x"})
    with pytest.raises(SpecError) as caught:
        load_spec(child)
    issues = {issue.path: issue.message for issue in caught.value.issues}
    assert issues["model.layers[0].units"].endswith(f"(from {tmp_path / 'base.yaml'})")
    assert "from" not in issues["seed"]  # the child's own mistake is the child's
    write(tmp_path, "broken.yaml", "model: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken\.yaml.*\n.*malformed YAML"):
        load_spec(write(tmp_path, "uses_broken.yaml", {"extends": "broken.yaml"}))
    with pytest.raises(SpecError, match="extends: expected a spec file path"):
        load_spec(write(tmp_path, "odd.yaml", {"extends": 3}))


def test_accelerator_from_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, "spec.yaml", tiny_spec(trainer={"accelerator": "cuda"}))
    assert load_spec(path).trainer.accelerator == "cuda"
    monkeypatch.setenv("CROSSTRAIN_ACCELERATOR", "cpu")
    spec = load_spec(path)
    assert spec.trainer.accelerator == "cpu"  # environment over the spec file
    assert spec.override({"trainer.accelerator": "mps"}).trainer.accelerator == "mps"  # ... under
    monkeypatch.setenv("CROSSTRAIN_ACCELERATOR", "gpu")
    with pytest.raises(SpecError, match="environment variable CROSSTRAIN_ACCELERATOR='gpu'"):
        load_spec(path)


def test_one_set_takes_several_pairs():
    args = build_parser().parse_args(
        ["fit", "spec.yaml", "--set", "trainer.max_epochs=3", "optimizer.lr=3e-4"]
        + ["--set", "seed=5", "--max-epochs", "4"]
    )
    assert fit_overrides(args) == {
        "trainer.max_epochs": 4,  # the dedicated flag wins
        "optimizer.lr": "3e-4",
        "seed": "5",
    }


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CROSSTRAIN_")}
    return subprocess.run(
        [sys.executable, "-m", "crosstrain.cli", *args],
        cwd=cwd,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_print_config_shows_the_resolved_spec_without_training(tmp_path):
    write(tmp_path, "base.yaml", tiny_spec())
    write(tmp_path, "child.yaml", {"extends": "base.yaml", "optimizer": {"name": "sgd"}})
    line = ["fit", "child.yaml", "--print-config", "--backend", "jax"]
    line += ["--set", "trainer.max_epochs=3", "optimizer.lr=3e-4"]
    done = run_cli(line, tmp_path, CROSSTRAIN_ACCELERATOR="cpu")
    assert done.returncode == 0, done.stderr
    assert "# backend: jax  (from command line)" in done.stdout
    assert "# accelerator: cpu  (from $CROSSTRAIN_ACCELERATOR)" in done.stdout
    printed = yaml.safe_load(done.stdout)
    assert printed["backend"] == "jax" and printed["trainer"]["accelerator"] == "cpu"
    assert printed["trainer"]["max_epochs"] == 3 and printed["optimizer"]["lr"] == 3e-4
    assert printed["optimizer"]["name"] == "sgd" and "extends" not in printed
    assert printed["trainer"]["checkpoint"]["keep"] == 3  # defaults are spelled out
    assert not (tmp_path / "runs").exists()
    # what it prints is a spec that resolves to itself
    write(tmp_path, "printed.yaml", done.stdout)
    again = run_cli(["config", "printed.yaml"], tmp_path, CROSSTRAIN_BACKEND="torch")
    assert again.returncode == 0, again.stderr
    assert "# backend: torch  (from $CROSSTRAIN_BACKEND)" in again.stdout  # env beats the file
    assert yaml.safe_load(again.stdout) == printed | {"backend": "torch"}
    bad = run_cli(["config", "child.yaml"], tmp_path, CROSSTRAIN_ACCELERATOR="gpu")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    assert "CROSSTRAIN_ACCELERATOR='gpu'" in bad.stderr and "Traceback" not in bad.stderr
    unknown = run_cli(["fit", "child.yaml", "--print-config"], tmp_path, CROSSTRAIN_BACKEND="nope")
    assert unknown.returncode == 2 and "unknown backend 'nope'" in unknown.stderr
    assert "(from environment variable CROSSTRAIN_BACKEND)" in unknown.stderr
