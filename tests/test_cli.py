"""The `crosstrain` command, run as a real subprocess in a temporary directory.

Also the progress display (plain lines off a terminal, the live bar's clean-up) in process.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import EXAMPLES, tiny_spec
from crosstrain.plugins.progress import LiveProgressBar, ProgressBar, format_duration, format_value

BACKEND = os.environ.get("CLI_TEST_BACKEND", "torch")
MLP = shlex.quote(str(EXAMPLES / "digits_mlp.yaml"))


def run_cli(line: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m crosstrain.cli LINE` (split like a shell) in `cwd`; output captured, no tty."""
    full_env = {k: v for k, v in os.environ.items() if k != "CROSSTRAIN_BACKEND"} | (env or {})
    if env and "PYTHONPATH" in env and os.environ.get("PYTHONPATH"):
        full_env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], os.environ["PYTHONPATH"]])
    command = [sys.executable, "-m", "crosstrain.cli", *shlex.split(line)]
    return subprocess.run(
        command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )


def write_spec(directory: Path, data: dict | str) -> Path:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    (directory / "spec.yaml").write_text(text, encoding="utf-8")
    return directory / "spec.yaml"


def tiny_cli_spec(**trainer: object) -> dict:
    spec = tiny_spec()
    spec["trainer"] = {"max_epochs": 2, "log_every_n_steps": 2, **trainer}
    return spec


def assert_clean_error(done: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def epochs_of(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")]


# -- commands that need no backend --------------------------------------------------------------


def test_schema_is_json_with_properties_and_every_layer(tmp_path):
    done = run_cli("schema", tmp_path)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert "properties" in schema and {"model", "trainer", "data"} <= set(schema["properties"])
    layer_refs = [choice["$ref"] for choice in schema["$defs"]["AnyLayer"]["oneOf"]]
    assert "#/$defs/Dense" in layer_refs and "#/$defs/Residual" in layer_refs
    layers = schema["$defs"]["ModelSpec"]["properties"]["layers"]
    assert {"items": {"$ref": "#/$defs/AnyLayer"}, "minItems": 1, "type": "array"} in layers[
        "anyOf"
    ]
    assert "fn" not in schema["$defs"]["FunctionSpec"]["properties"]


def test_summary_of_the_digits_mlp(tmp_path):
    done = run_cli(f"summary {MLP}", tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Layer" in out and "Output shape" in out and "Params" in out
    assert "dense_0" in out and "(None, 128)" in out and "8,320" in out
    assert "Total params:         9,610" in out  # 64*128+128 + 128*10+10


def bad_layer(layer: dict) -> dict:
    spec = tiny_cli_spec()
    spec["model"]["layers"][0] = layer
    return spec


BAD_SPECS = {
    "unknown layer": (
        bad_layer({"type": "Dens", "units": 4}),
        ["model.layers[0]", "unknown layer type 'Dens'", "did you mean 'Dense'"],
    ),
    "wrong type": (
        bad_layer({"type": "Dense", "units": "abc"}),
        ["model.layers[0].units: expected an integer, got 'abc'"],
    ),
    "negative units": (
        bad_layer({"type": "Dense", "units": -3}),
        ["model.layers[0].units: expected a positive integer, got -3"],
    ),
    "unknown key": (
        bad_layer({"type": "Dense", "unitz": 4}),
        ["model.layers[0].unitz", "unknown key 'unitz'; did you mean 'units'"],
    ),
    "malformed yaml": (
        "name: x\nmodel:\n  input_shape: [4\n  layers: []\n",
        ["malformed YAML", "line 4"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_specs_give_field_path_errors(tmp_path, case):
    data, fragments = BAD_SPECS[case]
    write_spec(tmp_path, data)
    for line in ("summary spec.yaml", f"fit spec.yaml --backend {BACKEND}"):
        assert_clean_error(run_cli(line, tmp_path), "invalid spec", *fragments)
    assert not (tmp_path / "runs").exists()


def test_python_tags_are_refused_and_never_run(tmp_path):
    write_spec(tmp_path, 'name: !!python/object/apply:os.system ["touch pwned"]\n')
    assert_clean_error(run_cli("summary spec.yaml", tmp_path), "refused YAML tag", "line 1")
    assert not (tmp_path / "pwned").exists()


def test_each_spec_issue_on_its_own_line_and_traceback_on_request(tmp_path):
    spec = bad_layer({"type": "Dense", "units": -3})
    spec["trainer"] = {"max_epoch": 2}
    write_spec(tmp_path, spec)
    done = run_cli("summary spec.yaml", tmp_path)
    assert_clean_error(done, "(2 problems)")
    lines = [line.strip() for line in done.stderr.strip().splitlines()]
    assert lines[1] == "model.layers[0].units: expected a positive integer, got -3"
    assert lines[2] == "trainer.max_epoch: unknown key 'max_epoch'; did you mean 'max_epochs'?"
    loud = run_cli("summary spec.yaml --traceback", tmp_path)
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "SpecError" in loud.stderr


def test_missing_spec_file_and_bad_arguments(tmp_path):
    assert_clean_error(run_cli("summary nope.yaml", tmp_path), "spec file not found: nope.yaml")
    done = run_cli("fit", tmp_path)
    assert done.returncode == 2 and "usage:" in done.stderr
    assert run_cli("conformance", tmp_path).returncode == 2


def test_backends_lists_torch_installed_with_its_version(tmp_path):
    done = run_cli("backends", tmp_path)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("torch "))
    assert row.split()[1:3] == ["yes", importlib.metadata.version("torch")]
    assert "cpu" in row
    keras = next(line for line in done.stdout.splitlines() if line.startswith("keras "))
    assert keras.endswith(" ...") and len(keras) < 120  # the long note is shortened here
    assert "\nkeras:\n  keras:jax is the fastest engine" in done.stdout  # and printed whole
    assert max(len(line) for line in done.stdout.splitlines()) < 120


def test_plugins_lists_built_ins_and_what_they_registered(tmp_path):
    done = run_cli("plugins", tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for name in ("plugins.builtins", "plugins.sources", "plugins.csv_logger", "backends.torch"):
        assert f"  crosstrain.{name}" in out
    assert "built-in" in out and "Dense" in out and "data sources: sklearn, npz, random" in out
    assert "backends: torch" in out and "loggers: csv" in out and "broken plugins" not in out


def make_plugin(site: Path, name: str, code: str) -> None:
    """A distribution on `site` whose `crosstrain` entry point is the module `code`."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[crosstrain]\n{name} = {name}_module\n")
    (site / f"{name}_module.py").write_text(code)


GHOST_BACKEND = """
from crosstrain.plugin.hookspecs import hookimpl
from crosstrain.plugin.protocol import Backend, Capabilities

class Ghost(Backend):
    name, extra = "ghost", "ghost"
    def is_available(self):
        return False, "ghostlib is not installed"
    def version(self):
        return None
    def capabilities(self):
        return Capabilities(layers=frozenset())
    def accelerators_found(self):
        return []
    def build(self, spec, env):
        raise AssertionError("an unavailable backend is never built")

@hookimpl
def crosstrain_add_backends():
    return [Ghost()]
"""


def test_a_broken_plugin_is_reported_and_the_rest_keeps_working(tmp_path):
    make_plugin(tmp_path / "site", "brokenplug", "raise ImportError('needs the moon')\n")
    env = {"PYTHONPATH": str(tmp_path / "site")}
    done = run_cli("plugins", tmp_path, env)
    assert done.returncode == 0, done.stderr
    broken = done.stdout.split("broken plugins (1):")[1]
    assert "brokenplug  brokenplug_module" in broken and "ImportError: needs the moon" in broken
    assert run_cli(f"summary {MLP}", tmp_path, env).returncode == 0
    assert "failed to load" in run_cli("backends", tmp_path, env).stdout


def test_a_missing_framework_says_what_to_install(tmp_path):
    make_plugin(tmp_path / "site", "ghost", GHOST_BACKEND)
    env = {"PYTHONPATH": str(tmp_path / "site")}
    done = run_cli("backends", tmp_path, env)
    row = next(line for line in done.stdout.splitlines() if line.startswith("ghost "))
    assert row.split()[1] == "no" and "pip install 'crosstrain[ghost]'" in row
    plugins = run_cli("plugins", tmp_path, env).stdout
    assert re.search(r"\n  ghost +ghost_module\n +backends: ghost\n", plugins), plugins
    write_spec(tmp_path, tiny_cli_spec())
    done = run_cli("fit spec.yaml --backend ghost", tmp_path, env)
    assert_clean_error(done, "backend 'ghost' is not available", "pip install 'crosstrain[ghost]'")
    assert done.stdout == ""  # refused before the model table and "training ... on ghost"


def test_plugins_option_limits_what_loads(tmp_path):
    done = run_cli("plugins --plugins builtins,sources,nosuch", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "loaded plugins (2):" in done.stdout and "crosstrain.backends" not in done.stdout
    assert "no plugin named 'nosuch'" in done.stderr
    write_spec(tmp_path, tiny_cli_spec())
    done = run_cli(
        f"fit spec.yaml --backend {BACKEND} --plugins builtins,sources,csv_logger", tmp_path
    )
    assert_clean_error(done, f"unknown backend '{BACKEND}'")


def test_unknown_backend_is_a_one_line_error(tmp_path):
    write_spec(tmp_path, tiny_cli_spec())
    done = run_cli("fit spec.yaml --backend torc", tmp_path)
    assert_clean_error(done, "unknown backend 'torc'", "did you mean 'torch'")
    assert len(done.stderr.strip().splitlines()) == 1
    from_env = run_cli("fit spec.yaml", tmp_path, {"CROSSTRAIN_BACKEND": "nope"})
    assert_clean_error(from_env, "unknown backend 'nope'")


# -- training through the command line ----------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> SimpleNamespace:
    """One `crosstrain fit` of the tiny spec, shared by the tests that read its run."""
    cwd = tmp_path_factory.mktemp("fit")
    write_spec(cwd, tiny_cli_spec())
    done = run_cli(f"fit spec.yaml --backend {BACKEND}", cwd)
    runs = sorted((cwd / "runs" / "tiny").glob("*")) if (cwd / "runs").exists() else []
    return SimpleNamespace(cwd=cwd, done=done, run=runs[0] if runs else None)


def test_fit_prints_epochs_and_final_metrics_and_writes_the_run(trained):
    done = trained.done
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "dense_0" in out and "Total params:" in out
    assert epochs_of(out) == ["1/2", "2/2"]
    last = [line for line in out.splitlines() if line.startswith("epoch 2/2")][0]
    for key in (
        "step 12 ",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "samples/s",
    ):
        assert key in last  # 192 training samples / 32 per batch * 2 epochs = 12 steps
    final = out.split("final metrics:")[1]
    assert "val_accuracy" in final and "train_loss" in final
    run = trained.run
    assert f"run directory: {run.relative_to(trained.cwd)}" in out
    assert (run / "spec.yaml").is_file() and (run / "metrics.csv").is_file()
    assert (run / "checkpoints" / "step-12" / "trainer.json").is_file()
    assert yaml.safe_load((run / "spec.yaml").read_text())["name"] == "tiny"


def test_non_tty_progress_prints_no_per_batch_output(trained):
    lines = trained.done.stdout.splitlines()
    assert not any("\r" in line or "\x1b[" in line for line in lines)
    assert len(epochs_of(trained.done.stdout)) == 2


def test_evaluate_a_checkpoint(trained):
    done = run_cli(
        f"evaluate spec.yaml --checkpoint {trained.run} --backend {BACKEND}", trained.cwd
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"checkpoint: {trained.run}/checkpoints/step-12 (step 12)" in out
    assert "data: the validation split (0.25 of random:classification, 64 samples)" in out
    assert "validation metrics:" in out and "val_loss" in out and "val_accuracy" in out
    assert "test_loss" not in out


def test_predict_a_checkpoint(trained):
    checkpoint = trained.run / "checkpoints" / "step-12"
    line = f"predict spec.yaml --checkpoint {checkpoint} --output out/p.npy --backend {BACKEND}"
    done = run_cli(line, trained.cwd)
    assert done.returncode == 0, done.stderr
    assert "shape (256, 3)" in done.stdout
    predictions = np.load(trained.cwd / "out" / "p.npy")
    assert predictions.shape == (256, 3) and np.isfinite(predictions).all()


def test_predict_inputs_from_a_file(trained):
    rows = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    np.save(trained.cwd / "rows.npy", rows)
    np.savez(trained.cwd / "rows.npz", x=rows, y=np.zeros(5))
    outputs = []
    for name in ("rows.npy", "rows.npz"):
        line = (
            f"predict spec.yaml --checkpoint {trained.run} --input {name} --output {name}.out.npy"
        )
        done = run_cli(f"{line} --backend {BACKEND}", trained.cwd)
        assert done.returncode == 0, done.stderr
        assert "shape (5, 3)" in done.stdout
        outputs.append(np.load(trained.cwd / f"{name}.out.npy"))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    (trained.cwd / "bad.npy").write_text("not an array")
    line = f"predict spec.yaml --checkpoint {trained.run} --input bad.npy --backend {BACKEND}"
    assert_clean_error(run_cli(line, trained.cwd), "--input bad.npy: not a .npy or .npz file")


def test_missing_checkpoint_is_a_clean_error(trained):
    done = run_cli(f"evaluate spec.yaml --checkpoint no/such/dir --backend {BACKEND}", trained.cwd)
    assert_clean_error(done, "no/such/dir")


def test_set_flags_and_resume_latest(tmp_path):
    write_spec(tmp_path, tiny_cli_spec())
    common = f"fit spec.yaml --backend {BACKEND} --set model.layers[0].units=8 --run-dir elsewhere"
    done = run_cli(
        f"{common} --set trainer.max_epochs=1 --precision 32 --accelerator cpu --no-progress",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert epochs_of(done.stdout) == [] and "final metrics:" in done.stdout
    assert "(None, 8)" in done.stdout
    (run,) = (tmp_path / "elsewhere" / "tiny").glob("*")
    saved = yaml.safe_load((run / "spec.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 1 and saved["trainer"]["precision"] == "32"
    assert saved["model"]["layers"][0]["units"] == 8
    resumed = run_cli(f"{common} --max-epochs 2 --resume latest", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert epochs_of(resumed.stdout) == ["2/2"]


def test_bad_set_key_and_value(tmp_path):
    write_spec(tmp_path, tiny_cli_spec())
    done = run_cli(f"fit spec.yaml --backend {BACKEND} --set trainer.max_epoch=1", tmp_path)
    assert_clean_error(
        done, "trainer.max_epoch: unknown key 'max_epoch'; did you mean 'max_epochs'"
    )
    done = run_cli("fit spec.yaml --set trainer.max_epochs=-1", tmp_path)
    assert_clean_error(done, "trainer.max_epochs: expected a positive integer, got -1")
    assert_clean_error(run_cli("fit spec.yaml --set trainer", tmp_path), "expects key=value")
    assert not (tmp_path / "runs").exists()


def test_training_failure_exits_1(tmp_path):
    loss = "def nan_loss(xp, outputs, targets):\n    return xp.mean(outputs) * float('nan')\n"
    (tmp_path / "nanloss.py").write_text(loss)
    write_spec(tmp_path, {**tiny_cli_spec(), "loss": "nanloss:nan_loss"})
    done = run_cli(f"fit spec.yaml --backend {BACKEND}", tmp_path, {"PYTHONPATH": str(tmp_path)})
    assert_clean_error(done, "the training loss became nan", code=1)


def test_ctrl_c_exits_130_after_saving_a_checkpoint(tmp_path):
    spec = tiny_cli_spec(max_epochs=100000)
    spec["data"]["options"]["samples"] = 4096
    write_spec(tmp_path, spec)
    command = [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", "--backend", BACKEND]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    process = subprocess.Popen(command, cwd=tmp_path, **pipes)
    try:
        for line in process.stdout:
            if line.startswith("epoch "):
                break
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert "resume with --resume" in out
    assert list((tmp_path / "runs").glob("tiny/*/checkpoints/step-*"))


# -- the progress display in process ------------------------------------------------------------


def fake_trainer() -> SimpleNamespace:
    data = SimpleNamespace(batch_size=32, eval_batch_size=None)
    spec = SimpleNamespace(trainer=SimpleNamespace(max_epochs=20), data=data)
    return SimpleNamespace(
        spec=spec, steps_per_epoch=27, total_steps=540, batch_in_epoch=0, global_step=54
    )


def test_plain_progress_line_format(capsys):
    bar = ProgressBar(live=False)
    assert type(bar) is ProgressBar and not hasattr(bar, "on_batch_end")
    trainer = fake_trainer()
    bar.on_epoch_start(trainer, "train", 2)
    trainer.batch_in_epoch, trainer.global_step = 27, 81
    bar.on_epoch_start(trainer, "val", 2)
    bar.train_seconds = 0.4
    metrics = {
        "train_loss": 0.21432,
        "train_accuracy": 0.94311,
        "val_loss": 0.25,
        "val_accuracy": 0.9,
    }
    bar.on_epoch_end(trainer, "train", 2, metrics)
    assert capsys.readouterr().out.strip() == (
        "epoch 3/20  step 81  train_loss 0.2143  train_accuracy 0.9431  val_loss 0.2500"
        "  val_accuracy 0.9000  (400 ms, 2,160 samples/s)"
    )
    bar.on_epoch_start(trainer, "test", 0)
    bar.on_epoch_end(trainer, "test", 0, {"test_loss": 0.5})
    assert capsys.readouterr().out.startswith("test  test_loss 0.5000  (")


def test_formatting_of_values_and_durations():
    assert format_value(0.5) == "0.5000" and format_value(0) == "0.0000"
    assert format_value(1.25e-5) == "1.25e-05" and format_value(float("nan")) == "nan"
    assert format_duration(0.25) == "250 ms" and format_duration(12.34) == "12.3 s"
    assert format_duration(185) == "3:05" and format_duration(3725) == "1:02:05"


def test_live_bar_on_a_terminal_and_its_clean_up(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert type(ProgressBar(live=True)) is LiveProgressBar
    bar = LiveProgressBar()
    trainer = fake_trainer()
    bar.on_epoch_start(trainer, "train", 0)
    assert bar.progress is not None and bar.progress.live.is_started
    for index in range(3):
        bar.on_batch_end(trainer, "train", index, {"train_loss": 0.5} if index == 2 else None)
    task = bar.progress.tasks[0]
    assert task.completed == 3 and task.fields["loss"] == "loss 0.5000"
    live = bar.progress.live
    bar.on_exception(trainer, KeyboardInterrupt())
    assert bar.progress is None and not live.is_started
