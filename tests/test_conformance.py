"""The conformance suite itself: inert without a backend, passes on every built-in backend and
on the numpy example backend (what each declares), and fails a deliberately broken backend
with a reproduction command. Each backend runs in its own `crosstrain conformance` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import Refusal, assert_refused, run_cli, snapshot
from conftest import ROOT, run_python
from example_plugins import BROKEN_BACKEND, install_examples, make_distribution

CROSSTRAIN = [sys.executable, "-m", "crosstrain.cli"]
FRAMEWORKS = ("torch", "jax", "flax", "optax", "keras", "tensorflow")


def conformance(
    backend: str, tmp_path: Path, *extra: str, site: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Runs `crosstrain conformance` for `backend` with the example plugins importable."""
    paths = [str(site or install_examples())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    report, results = tmp_path / f"{backend}.md", tmp_path / f"{backend}.json"
    done = subprocess.run(
        [*CROSSTRAIN, "conformance", "--backend", backend, "--report", str(report)]
        + ["--json", str(results), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1200,
    )
    data = json.loads(results.read_text()) if results.is_file() else {}
    return done, data


def test_plugin_is_inert_and_imports_no_framework(tmp_path):
    done = run_python(
        "import sys, crosstrain.conformance.plugin\n"
        f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    env = {k: v for k, v in os.environ.items() if k != "CROSSTRAIN_CONFORMANCE_BACKEND"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "crosstrain.conformance.test_hooks"]
        + ["-p", "no:cacheprovider", "-q", "-rs"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "no backend under test" in done.stdout


BACKENDS = ["numpy", "torch", "jax", "keras:tensorflow", "keras:jax", "keras:torch"]
"""The numpy example backend runs the full suite; the frameworks run it with `--quick` (every
section, fewer variants) to keep `make test` short; `make conformance` runs all of it."""


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_passes_what_it_declares(backend, tmp_path):
    quick = () if backend == "numpy" else ("--quick",)
    done, data = conformance(backend, tmp_path, *quick)
    failures = [r for r in data.get("results", []) if r["outcome"] == "failed"]
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-2000:], failures[:5])
    assert data["header"]["backend"] == backend
    assert "Section" in done.stdout and "layers: forward" in done.stdout
    report = (tmp_path / f"{backend}.md").read_text()
    assert "## Results" in report and "## Tolerances" in report
    passed = {r["test"] for r in data["results"] if r["outcome"] == "passed"}
    assert any("test_digits_mlp_reaches_target_accuracy" in t for t in passed)
    if "ExampleRMSNorm" in data["header"]["capabilities"]["layers"]:
        assert "test_layers.py::test_forward_matches_numpy_reference[ExampleRMSNorm-0]" in passed
        assert (
            "test_gradients.py::test_gradients_match_finite_differences[ExampleRMSNorm-1]" in passed
        )
    if "RMSNorm" in data["header"]["capabilities"]["layers"]:
        assert "test_layers.py::test_forward_matches_numpy_reference[RMSNorm-0]" in passed
    if backend == "numpy":
        skipped = [r["message"] for r in data["results"] if r["outcome"] == "skipped"]
        assert any("not declared by numpy: layer Conv2D" in m for m in skipped)
        assert "test_layers.py::test_forward_matches_reference_backend[Dense-tanh]" in passed


def test_broken_backend_fails_with_a_reproduction(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "ct_numpy_broken", BROKEN_BACKEND)
    known = tmp_path / "known.txt"
    known.write_text(
        "numpy-broken test_layers.py::test_initial_state_is_cores[Dense] -- passes, so stale\n"
        "numpy-broken test_layers.py::test_forward_matches_numpy_reference[Dense-tanh] -- wrong on purpose\n"
    )
    env_site = Path(os.pathsep.join([str(site), str(install_examples())]))
    done, data = conformance(
        "numpy-broken",
        tmp_path,
        "-k",
        "test_layers and Dense",
        "--known-failures",
        str(known),
        site=env_site,
    )
    assert done.returncode == 1, done.stdout[-3000:]
    outcomes = {r["test"]: r["outcome"] for r in data["results"]}
    assert outcomes["test_layers.py::test_forward_matches_numpy_reference[Dense]"] == "failed"
    assert outcomes["test_layers.py::test_forward_matches_numpy_reference[Dense-tanh]"] == "xfailed"
    assert outcomes["test_layers.py::test_initial_state_is_cores[Dense]"] == "xpassed"
    failed = next(r for r in data["results"] if r["outcome"] == "failed")
    assert "--crosstrain-backend numpy-broken" in failed["reproduce"]
    assert "pytest" in failed["reproduce"] and "test_layers.py::" in failed["reproduce"]
    assert "stale known failure" in done.stderr and "passes now" in done.stderr
    report = (tmp_path / "numpy-broken.md").read_text()
    assert "## Failures" in report and "reproduce:" in report
    table = done.stdout[done.stdout.index("Section") :]
    layers_row = next(line for line in table.splitlines() if line.startswith("layers: forward"))
    assert layers_row.split()[3] != "0"  # failed column


def test_repository_reports_exist():
    reports = ROOT / "conformance" / "reports"
    for backend in ("numpy", "torch", "jax", "keras-tensorflow", "keras-jax", "keras-torch"):
        assert (reports / f"{backend}.md").is_file(), f"run `make conformance` ({backend})"


SELECTS_NOTHING = [
    pytest.param(
        "-k nothing_is_named_so",
        Refusal(
            2,
            (
                "error: -k 'nothing_is_named_so' selected no conformance test (sections: ",
                "test_registration, test_spec_validation, test_layers",
            ),
        ),
        id="no-match",
    ),
    pytest.param(
        "--quick -k 'test_training and Conv2D'",
        Refusal(2, ("-k 'test_training and Conv2D' selected no conformance test with --quick",)),
        id="no-match-quick",
    ),
    pytest.param(
        "-k 'and ('",
        Refusal(2, ("error: -k 'and (' is not a valid test selection", "Wrong expression")),
        id="bad-expression",
    ),
]


@pytest.mark.parametrize(("options", "expected"), SELECTS_NOTHING)
def test_a_selection_of_nothing_is_an_error(options, expected, tmp_path):
    before = snapshot(tmp_path)
    done = run_cli(f"conformance --backend torch {options}", tmp_path)
    assert_refused(done, expected, before, tmp_path)
    assert "Section" not in done.stdout  # no empty table that looks like a run


ODD_LOSSES = '''
"""Two plugin losses: one that is not portable (10% off outside numpy), one without cases."""
from crosstrain import hookimpl


def _l2(xp, outputs, targets):
    diff = outputs - xp.reshape(xp.astype(targets, outputs.dtype), outputs.shape)
    return xp.mean(diff * diff)


def odd_l2(xp, outputs, targets):
    scale = 1.0 if type(outputs).__module__.startswith("numpy") else 1.1
    return scale * _l2(xp, outputs, targets)


odd_l2.conformance_cases = [{"targets": "values", "units": 3}]


def bare_l2(xp, outputs, targets):
    return _l2(xp, outputs, targets)


@hookimpl
def crosstrain_add_losses(registry):
    registry.losses.add("odd_l2", odd_l2)
    registry.losses.add("bare_l2", bare_l2)
'''


def test_plugin_losses_and_metrics_are_checked(tmp_path):
    """The spirals example's focal_loss and brier_score pass on torch (value and gradient); a
    loss that differs outside numpy fails with a reproduction; one without cases is a skip."""
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [
            *pip,
            "--no-compile",
            "--target",
            str(site),
            str(ROOT / "examples/plugins/crosstrain-spirals"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    make_distribution(site, "ct_odd_losses", ODD_LOSSES)
    done, data = conformance(
        "torch", tmp_path, "-k", "focal or brier or odd_l2 or bare_l2", site=site
    )
    outcomes = {r["test"]: r for r in data["results"]}
    loss = "test_losses_metrics.py::test_loss_value_and_gradient"
    assert outcomes[f"{loss}[focal_loss-labels]"]["outcome"] == "passed", done.stdout[-3000:]
    assert outcomes[f"{loss}[focal_loss-probabilities-gamma=1.5]"]["outcome"] == "passed"
    assert outcomes["test_losses_metrics.py::test_metric_value[brier_score-labels]"]["outcome"] == (
        "passed"
    )
    odd = outcomes[f"{loss}[odd_l2-values]"]
    assert odd["outcome"] == "failed" and "odd_l2 value" in odd["message"]
    assert "--crosstrain-backend torch" in odd["reproduce"]
    bare = outcomes[f"{loss}[bare_l2-no-cases]"]
    assert bare["outcome"] == "skipped"
    assert bare["message"] == "plugin loss bare_l2 declares no conformance_cases"
    assert done.returncode == 1
