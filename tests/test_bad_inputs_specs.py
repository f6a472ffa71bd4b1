"""Issue 14, specs, data, plugins, processes: each bad input is one clear line, never a traceback.

One row per case on the real command line in a fresh working directory: the exit code, the
message, a bounded output (an alias bomb is never formatted whole) and that no file outside
`runs/` changed. The `--devices 2` rows start real torchrun workers (gloo on CPU).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import Refusal, assert_refused, run_cli, snapshot
from conftest import tiny_spec
from example_plugins import make_distribution

FIT = "fit spec.json --backend torch --no-progress"

BAD_HOOK = """
from crosstrain import hookimpl

@hookimpl
def on_batch_end(trainer, stage, batch_index):
    if stage == "train" and trainer.global_step == 5:
        raise ValueError("boom at step 5")
"""


def _bomb(levels: int) -> str:
    """A billion-laughs spec: `seed` holds 9**levels strings through nested aliases."""
    lines = [
        "name: bomb",
        "seed:",
        '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _nested(levels: int) -> dict:
    layer: dict = {"type": "Dense", "units": 8}
    for _ in range(levels):
        layer = {"type": "Residual", "layers": [layer]}
    return tiny_spec(model={"input_shape": [8], "layers": [layer]})


def _wide(count: int) -> dict:
    layers = [
        {"type": "Dense", "units": 8} if i % 2 == 0 else {"type": "ReLU"} for i in range(count)
    ]
    return tiny_spec(model={"input_shape": [8], "layers": layers})


def _nan_data(cwd: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    x[17, 3] = np.nan
    np.savez(cwd / "nan.npz", x=x, y=rng.integers(0, 3, 64))
    spec = tiny_spec(data={"source": "npz:nan.npz", "batch_size": 16})
    (cwd / "spec.json").write_text(json.dumps(spec))


def _text(name: str, text: str) -> Callable[[Path], None]:
    return lambda cwd: (cwd / name).write_text(text)


def _spec(spec: dict) -> Callable[[Path], None]:
    return lambda cwd: (cwd / "spec.json").write_text(json.dumps(spec))


def _plugin(name: str, source: str) -> Callable[[Path], None]:
    def make(cwd: Path) -> None:
        (cwd / "spec.json").write_text(json.dumps(tiny_spec()))
        (cwd / "site").mkdir()
        make_distribution(cwd / "site", name, source)

    return make


SITE = {"PYTHONPATH": "site", "PYTHONDONTWRITEBYTECODE": "1"}

CASES = [
    pytest.param(
        _text("bomb.yaml", _bomb(9)),
        "config bomb.yaml",
        {},
        Refusal(fragments=("bomb.yaml", "expands to more than 1,000,000 values")),
        id="alias_bomb",
    ),
    pytest.param(
        _text("bomb.yaml", _bomb(4)),  # 6,561 strings, under the bound: the message is cut
        "config bomb.yaml",
        {},
        Refusal(fragments=("seed: expected an integer, got {'l0'",), extra={"max_chars": 800}),
        id="alias_bomb_in_failing_field",
    ),
    pytest.param(
        _text("loop.yaml", "name: x\nseed: &a [*a]\n"),
        "config loop.yaml",
        {},
        Refusal(fragments=("a YAML alias refers to itself",)),
        id="recursive_alias",
    ),
    pytest.param(
        _spec(tiny_spec(model={"input_shape": [8], "layers": [{"type": "Dense", "units": 10**9}]})),
        FIT,
        {},
        Refusal(fragments=("model: 9,000,000,000 parameters, more than model.max_parameters",)),
        id="huge_model_fit",
    ),
    pytest.param(
        _spec(tiny_spec(model={"input_shape": [8], "layers": [{"type": "Dense", "units": 10**9}]})),
        "summary spec.json",
        {},
        Refusal(fragments=("more than model.max_parameters (2,147,483,648)",)),
        id="huge_model_summary",
    ),
    pytest.param(
        _spec(tiny_spec()),
        "config spec.json --set model.max_parameters=100",
        {},
        Refusal(fragments=("model: 195 parameters, more than model.max_parameters (100)",)),
        id="parameter_budget_configurable",
    ),
    pytest.param(
        _spec(_nested(40)),
        "config spec.json",
        {},
        Refusal(fragments=("layers nest more than 32 levels deep at model.layers[0].layers[0]",)),
        id="residual_nesting_limit",
    ),
    pytest.param(
        _spec(_nested(130)),
        "config spec.json",
        {},
        Refusal(fragments=("nested deeper than 100 levels of mappings and lists",)),
        id="residual_nesting_130",
    ),
    pytest.param(
        _spec(_wide(300_000)),
        "config spec.json",
        {},
        Refusal(fragments=("model: more than 100,000 layers",), extra={"max_seconds": 90}),
        id="layers_300k",
    ),
    pytest.param(
        _spec(tiny_spec()),
        "config spec.json --set name=[unclosed",
        {},
        Refusal(fragments=("error: --set name=[unclosed: malformed YAML",)),
        id="set_malformed_yaml",
    ),
    pytest.param(
        _plugin("bad_hook", BAD_HOOK),
        FIT,
        SITE,
        Refusal(
            code=1,
            fragments=("error: plugin bad_hook hook on_batch_end: ValueError: boom at step 5",),
            extra={"checkpoint": "step-5"},
        ),
        id="hook_raises_mid_fit",
    ),
    pytest.param(
        _nan_data,
        FIT,
        {},
        Refusal(fragments=("data.source 'npz:nan.npz': x has a non-finite value (nan) in row 17",)),
        id="nan_in_data",
    ),
    pytest.param(
        _spec(tiny_spec()),
        f"{FIT} --devices 2 --strategy fsdp --precision 16-mixed",
        {},
        Refusal(fragments=("precision '16-mixed' with strategy 'fsdp'",)),
        id="devices2_fsdp_16mixed",
    ),
    pytest.param(
        _spec(tiny_spec(data={"source": "npz:missing.npz"})),
        f"{FIT} --devices 2",
        {},
        Refusal(fragments=("data.source: missing.npz does not exist",)),
        id="devices2_missing_file",
    ),
    pytest.param(
        _spec(tiny_spec()),
        f"{FIT} --devices 2 --set model.layers[2].units=2",
        {},
        Refusal(fragments=("is not a class of the model's output",)),
        id="devices2_class_mismatch",
    ),
    pytest.param(
        _plugin("bad_hook", BAD_HOOK),
        f"{FIT} --devices 2",
        SITE,
        Refusal(code=1, fragments=("error: plugin bad_hook hook on_batch_end: ValueError",)),
        id="devices2_worker_error_once",
    ),
]


@pytest.mark.parametrize(("setup", "line", "env", "expected"), CASES)
def test_refused(
    setup: Callable[[Path], None], line: str, env: dict, expected: Refusal, tmp_path: Path
) -> None:
    setup(tmp_path)
    before = snapshot(tmp_path)
    started = time.perf_counter()
    done = run_cli(line, tmp_path, env=env)
    took = time.perf_counter() - started
    assert_refused(done, expected, before, tmp_path)
    assert "ChildFailedError" not in done.stderr, done.stderr
    if "max_chars" in expected.extra:
        assert len(done.stderr) <= expected.extra["max_chars"], done.stderr
    if "max_seconds" in expected.extra:
        assert took <= expected.extra["max_seconds"], f"took {took:.1f} s"
    if "checkpoint" in expected.extra:  # saved before the error was reported, as Ctrl-C does
        found = [p.name for p in (tmp_path / "runs").rglob("step-*")]
        assert found == [expected.extra["checkpoint"]], found
        assert "stopped by a failing plugin: saved" in done.stdout


def test_plugin_exiting_at_import_is_listed_broken(tmp_path: Path) -> None:
    _plugin("exits_at_import", "import sys\nsys.exit(7)\n")(tmp_path)
    listed = run_cli("plugins", tmp_path, env=SITE)
    assert listed.returncode == 0, listed.stderr
    assert "exits_at_import" in listed.stdout and "SystemExit: 7" in listed.stdout
    config = run_cli("config spec.json", tmp_path, env=SITE)
    assert config.returncode == 0, config.stderr
    assert "name: tiny" in config.stdout


def test_override_with_malformed_yaml_is_a_spec_error() -> None:
    import crosstrain as ct
    from crosstrain.errors import SpecError

    spec = ct.load_spec(tiny_spec())
    with pytest.raises(SpecError, match=r"name: malformed YAML"):
        spec.override({"name": "[unclosed"})
    assert spec.override({"trainer.max_epochs": "3"}).trainer.max_epochs == 3


def test_non_finite_targets_name_the_array_and_row() -> None:
    import crosstrain as ct
    from crosstrain.errors import DataError

    x = np.zeros((40, 8), np.float32)
    y = np.zeros((40, 1), np.float32)
    y[5, 0] = np.inf
    spec = tiny_spec(loss="mse")
    spec["model"]["layers"][-1]["units"] = 1
    with pytest.raises(DataError, match=r"data: y has a non-finite value \(inf\) in row 5"):
        ct.fit(spec, backend="torch", data=(x, y), run_dir=False)
