"""Keras backend from the outside: registration without imports, declared capabilities, the
one-engine-per-process rule, and every engine's own suite (`test_keras_engine.py`) run in a
process of its own. Nothing here imports Keras into the pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import crosstrain as ct
import pytest
from conftest import EXAMPLES, ROOT, run_python
from crosstrain.backends.keras import KerasBackend
from crosstrain.backends.keras.device import engine_of

ENGINES = [e for e in ("jax", "tensorflow", "torch") if KerasBackend().engines()[e]]
if not KerasBackend().is_available()[0] or not ENGINES:
    pytest.skip("keras or its engines are not installed", allow_module_level=True)

ENGINE_ENV = {"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
"""Subprocess settings: one intra-op thread keeps small-model tests fast on busy machines."""


def _engine_env(engine: str, **extra: str) -> dict[str, str]:
    return {**ENGINE_ENV, "KERAS_BACKEND": engine, "CROSSTRAIN_KERAS_ENGINE": engine, **extra}


def _tail(process: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    return "\n".join((process.stdout + process.stderr).splitlines()[-lines:])


def test_importing_the_plugin_imports_no_keras_or_engine() -> None:
    code = textwrap.dedent(
        """
        import sys
        import crosstrain.backends.keras as plugin
        import crosstrain as ct
        backend = ct.get_registry().backend("keras:jax")
        assert backend.name == "keras" and backend.is_available()[0]
        backend.capabilities()
        heavy = sorted(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules)
        print("imported:", heavy)
        """
    )
    process = run_python(code, cwd=ROOT)
    assert process.returncode == 0, _tail(process)
    assert "imported: []" in process.stdout


def test_engine_names() -> None:
    assert engine_of("keras:jax") == "jax"
    assert engine_of("keras:torch") == "torch"
    with pytest.raises(ct.UnsupportedFeature, match="engine 'numpy'"):
        engine_of("keras:numpy")


def test_plain_keras_follows_keras_backend_else_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    if "keras" in sys.modules:
        pytest.skip("keras is imported in this process; plain 'keras' then means its engine")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert engine_of("keras") == "torch"
    monkeypatch.delenv("KERAS_BACKEND")
    assert engine_of("keras") == "tensorflow"


def test_capabilities_are_declared() -> None:
    caps = KerasBackend().capabilities()
    assert {"Dense", "Conv2D", "MultiHeadSelfAttention", "Residual", "BatchNorm"} <= caps.layers
    assert caps.precisions == {"32", "16-mixed", "bf16-mixed"}
    assert caps.optimizers is None  # any registered optimizer: each is written once
    assert "data_parallel" in caps.strategies and caps.steps_per_execution


@pytest.mark.parametrize(
    ("backend", "trainer", "match"),
    [
        ("keras:torch", {"compile": True}, "trainer.compile"),
        ("keras:tensorflow", {"devices": 2}, "devices=2"),
        ("keras:jax", {"precision": "bf16-true"}, "precision 'bf16-true'"),
    ],
)
def test_unsupported_requests_fail_before_keras_is_imported(
    backend: str, trainer: dict, match: str
) -> None:
    spec = ct.load_spec(
        {
            "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 2}]},
            "trainer": trainer,
        }
    )
    imported = "keras" in sys.modules
    with pytest.raises(ct.UnsupportedFeature, match=match):
        ct.build(spec, backend=backend)
    assert ("keras" in sys.modules) == imported


def test_a_second_engine_in_one_process_is_a_clear_error() -> None:
    engine, other = ENGINES[0], ENGINES[-1] if len(ENGINES) > 1 else "torch"
    code = textwrap.dedent(
        f"""
        import crosstrain as ct
        spec = ct.load_spec({{"model": {{"input_shape": [4], "layers": [{{"type": "Dense", "units": 2}}]}}}})
        ct.build(spec, backend="keras:{engine}")
        ct.build(spec, backend="keras")
        try:
            ct.build(spec, backend="keras:{other}")
        except ct.CrosstrainError as err:
            print("ERROR:", err)
        """
    )
    process = run_python(code, cwd=ROOT, env={**ENGINE_ENV, "KERAS_BACKEND": other})
    assert process.returncode == 0, _tail(process)
    message = process.stdout.split("ERROR:", 1)[-1]
    assert f"already imported in this process with the '{engine}' engine" in message
    assert "own process" in message


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_suite(engine: str, request: pytest.FixtureRequest) -> None:
    """Runs test_keras_engine.py in a fresh process on `engine` (same -m selection as here)."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/backends/test_keras_engine.py",
    ]
    markers = request.config.getoption("markexpr")
    if markers:
        command += ["-m", markers]
    process = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **_engine_env(engine)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert process.returncode == 0, _tail(process, 120)
    assert " passed" in process.stdout and "skipped" not in process.stdout.splitlines()[-1], _tail(
        process
    )


@pytest.mark.skipif("jax" not in ENGINES, reason="data parallel runs on keras:jax")
def test_data_parallel_on_four_forced_host_devices_matches_one_device() -> None:
    code = textwrap.dedent(
        """
        import numpy as np, crosstrain as ct
        from sklearn.datasets import load_digits
        digits = load_digits()
        x, y = (digits.data[:256] / 16).astype(np.float32), digits.target[:256]
        base = {"model": {"input_shape": [64], "layers": [{"type": "Dense", "units": 32, "use_bias": False},
                {"type": "BatchNorm"}, {"type": "ReLU"}, {"type": "Dense", "units": 10}]},
                "optimizer": {"name": "adam", "lr": 0.01}, "metrics": ["accuracy"],
                "trainer": {"progress": False}}
        curves, states = [], []
        for devices in (1, 4):
            spec = ct.load_spec({**base, "trainer": {**base["trainer"], "devices": devices}})
            program = ct.build(spec, backend="keras:jax")
            outs = [program.train_step((x[i:i + 64], y[i:i + 64])) for i in range(0, 256, 64)]
            outs.append(program.eval_step((x[:30], y[:30])))
            curves.append([program.metrics_to_host([o])["loss"] for o in outs])
            states.append(program.get_state())
            if devices == 4:
                kernel = program.native_model.trainable_variables[0].value
                print("DEVICES", len(kernel.sharding.device_set), program.distribution.num_model_replicas)
        np.testing.assert_allclose(curves[0], curves[1], rtol=1e-5)
        for name, value in states[0].params.items():
            np.testing.assert_allclose(value, states[1].params[name], rtol=1e-4, atol=1e-6, err_msg=name)
        print("OK")
        """
    )
    env = {
        **ENGINE_ENV,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    process = run_python(code, cwd=ROOT, env=env)
    assert process.returncode == 0, _tail(process)
    assert "DEVICES 4 4" in process.stdout and "OK" in process.stdout


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_cli_fit_reaches_95_percent(engine: str, tmp_path) -> None:
    command = [
        sys.executable,
        "-m",
        "crosstrain.cli",
        "fit",
        str(EXAMPLES / "digits_mlp.yaml"),
        "--backend",
        f"keras:{engine}",
        "--set",
        "trainer.progress=false",
        "--set",
        f"trainer.run_dir={tmp_path}",
    ]
    process = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **ENGINE_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, _tail(process)
    accuracy = next(
        line for line in process.stdout.splitlines() if line.strip().startswith("val_accuracy")
    )
    assert float(accuracy.split()[-1]) >= 0.95, process.stdout
