"""The example third-party plugins (examples/plugins/*), installed with pip and used end to end,
and plugin failures: each broken plugin is reported with its name, entry point and cause,
rolled back whole, and nothing else breaks; `--no-plugin` keeps a plugin from being imported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import run_python, tiny_spec
from example_plugins import install_examples, make_distribution

CROSSTRAIN = [sys.executable, "-m", "crosstrain.cli"]


def cli(*args: str, cwd: Path, site: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": site}
    return subprocess.run(
        [*CROSSTRAIN, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def rmsnorm_spec() -> dict:
    spec = tiny_spec()
    spec["model"] = {
        "input_shape": [8],
        "layers": [
            {"type": "Dense", "units": 16},
            {"type": "ExampleRMSNorm"},
            {"type": "ReLU"},
            {"type": "Dense", "units": 3},
        ],
    }
    spec["optimizer"] = {"name": "example_signum", "lr": 0.01}  # the plugin's optimizer.py
    return spec


def test_plugins_lists_the_examples_with_their_hooks(tmp_path):
    done = cli("plugins", cwd=tmp_path, site=str(install_examples()))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"rmsnorm +crosstrain_rmsnorm", out) and re.search(
        r"numpy +crosstrain_numpy", out
    )
    assert "layers: ExampleRMSNorm" in out and "hooks: crosstrain_make_callbacks" in out
    assert "example_signum" in out
    assert "numpy" in out and "backends: numpy" in out
    assert "broken" not in out
    done = cli("plugins", "--no-plugin", "rmsnorm", cwd=tmp_path, site=str(install_examples()))
    assert "ExampleRMSNorm" not in done.stdout and "backends: numpy" in done.stdout


FIT_RMSNORM = """
import json, sys, crosstrain as ct
spec = json.loads(sys.argv[1])
out = {}
for backend in sys.argv[2].split(","):
    result = ct.fit(spec, backend=backend, run_dir=sys.argv[3] + "/" + backend.replace(":", "-"))
    scales = (result.run_dir / "rmsnorm_scales.jsonl").read_text().splitlines()
    slots = sorted({key.split("/")[0] for key in result.state.optimizer})
    out[backend] = [result.metrics["val_accuracy"], len(scales), json.loads(scales[-1]), slots]
print(json.dumps(out))
"""


@pytest.mark.parametrize("backends", ["torch,jax,keras:jax", "keras:tensorflow", "keras:torch"])
def test_rmsnorm_trains_on_every_backend(backends, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(install_examples())}
    done = subprocess.run(
        [sys.executable, "-c", FIT_RMSNORM, json.dumps(rmsnorm_spec()), backends, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for backend in backends.split(","):
        accuracy, epochs, last, slots = results[backend]
        assert 0.0 <= accuracy <= 1.0 and slots == ["momentum"]
        assert epochs == 2 and last["epoch"] == 1
        assert "examplermsnorm_1/scale" in last and last["examplermsnorm_1/scale"] != 1.0


def test_numpy_backend_trains_from_the_cli_and_torch_reads_its_checkpoint(tmp_path):
    site = str(install_examples())
    spec = {
        "name": "digits-numpy",
        "seed": 0,
        "data": {"source": "sklearn:digits", "validation_split": 0.2, "batch_size": 64},
        "model": {
            "input_shape": [64],
            "layers": [
                {"type": "Dense", "units": 32},
                {"type": "Tanh"},
                {"type": "Dense", "units": 10},
            ],
        },
        "loss": "cross_entropy",
        "metrics": ["accuracy"],
        "optimizer": {"name": "adam", "lr": 0.01},
        "trainer": {"max_epochs": 4, "progress": False, "run_dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = cli("fit", str(path), "--backend", "numpy", cwd=tmp_path, site=site)
    assert done.returncode == 0, done.stderr[-3000:]
    accuracy = float(done.stdout.split("val_accuracy")[1].split()[0])
    assert accuracy > 0.9
    evaluated = cli(
        "evaluate",
        str(path),
        "--checkpoint",
        "latest",
        "--backend",
        "torch",
        cwd=tmp_path,
        site=site,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert abs(float(evaluated.stdout.split("val_accuracy")[1].split()[0]) - accuracy) < 1e-6
    spec["optimizer"] = {"name": "rmsprop"}
    path.write_text(yaml.safe_dump(spec))
    refused = cli("fit", str(path), "--backend", "numpy", cwd=tmp_path, site=site)
    assert refused.returncode == 2
    assert "backend 'numpy' does not support optimizer 'rmsprop'" in refused.stderr


BROKEN = {
    "ct_raises": "raise RuntimeError('boom at import')\n",
    "ct_typo": """
        from crosstrain import hookimpl
        @hookimpl
        def on_epoch_ned(trainer):
            pass
    """,
    "ct_bad_signature": """
        from crosstrain import hookimpl
        @hookimpl
        def on_epoch_end(trainer, nonsense_argument):
            pass
    """,
    "ct_taken_name": """
        from crosstrain import hookimpl
        from crosstrain.nn.layers import Layer
        from typing import Literal

        class Swish(Layer):
            type: Literal["Swish"] = "Swish"

        class Impostor:
            name = "torch"

        @hookimpl
        def crosstrain_add_layers(registry):
            registry.layers.add(Swish)

        @hookimpl
        def crosstrain_add_losses(registry):
            registry.losses.add("impostor_loss", lambda xp, o, t: xp.mean(o))

        @hookimpl
        def crosstrain_add_backends():
            return [Impostor()]

        @hookimpl
        def on_fit_start(trainer):
            raise RuntimeError("a rolled-back plugin must never be called")
    """,
    "ct_side_effect": "open('imported.flag', 'w').write('x')\n",
}


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("broken-site")
    for name, source in BROKEN.items():
        make_distribution(site, name, source)
    return site


def test_broken_plugins_are_reported_and_rolled_back(broken_site, tmp_path):
    done = cli("plugins", cwd=tmp_path, site=str(broken_site))
    assert done.returncode == 0, done.stderr
    broken = done.stdout.split("broken plugins")[1]
    assert "ct_raises  ct_raises" in broken and "RuntimeError: boom at import" in broken
    assert "ct_typo  ct_typo" in broken and "on_epoch_ned" in broken
    assert "ct_bad_signature" in broken and "nonsense_argument" in broken
    assert "ct_taken_name  ct_taken_name" in broken
    assert "backend 'torch' is already registered" in broken
    code = textwrap.dedent(f"""
        import json, warnings, crosstrain as ct
        from crosstrain.plugin.registry import get_registry
        registry = get_registry()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = ct.fit({tiny_spec()!r}, backend="torch", run_dir=False)
        print(json.dumps({{
            "layers": registry.layers.names(), "losses": registry.losses.names(),
            "torch": type(registry.backends.get("torch")).__name__,
            "plugin": registry.pm.has_plugin("ct_taken_name"),
            "warnings": [str(w.message) for w in caught],
            "acc": result.metrics["val_accuracy"],
        }}))
    """)
    done = run_python(code, env={"PYTHONPATH": str(broken_site)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Swish" not in report["layers"] and "impostor_loss" not in report["losses"]
    assert report["torch"] == "TorchBackend" and report["plugin"] is False
    assert any("ct_taken_name" in w and "already registered" in w for w in report["warnings"])
    assert any("'ct_raises' (ct_raises)" in w and "boom at import" in w for w in report["warnings"])


def test_fit_reports_broken_plugins_and_no_plugin_prevents_import(broken_site, tmp_path):
    spec = tiny_spec()
    spec["trainer"]["run_dir"] = str(tmp_path / "runs")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = cli("fit", str(path), "--backend", "torch", cwd=tmp_path, site=str(broken_site))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "warning: plugin 'ct_raises' (ct_raises) was skipped: RuntimeError: boom at import"
        in done.stderr
    )
    assert "warning: plugin 'ct_taken_name' (ct_taken_name)" in done.stderr
    assert (tmp_path / "imported.flag").exists()
    (tmp_path / "imported.flag").unlink()
    done = cli(
        "plugins",
        "--no-plugin",
        "ct_side_effect",
        "--no-plugin",
        "ct_raises",
        cwd=tmp_path,
        site=str(broken_site),
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "imported.flag").exists()
    assert "ct_raises" not in done.stdout and "ct_typo" in done.stdout
    done = cli(
        "plugins",
        "--plugins",
        "crosstrain.plugins.builtins,torch",
        cwd=tmp_path,
        site=str(broken_site),
    )
    assert not (tmp_path / "imported.flag").exists() and "ct_typo" not in done.stdout
