"""pytest plugin of the conformance suite (entry point `pytest11`).

Loaded by pytest in every environment where crosstrain is installed, so it is inert unless a
backend is named (`--crosstrain-backend NAME` or `$CROSSTRAIN_CONFORMANCE_BACKEND`), and it
imports no framework. When active it prints the backend, its version, its capabilities and
the tolerances in the header, marks known failures (`known_failures.txt`, plus
`--crosstrain-known-failures FILE`), adds a copy-pasteable reproduction to every failure and
can write every result as JSON (`--crosstrain-json FILE`, read by `crosstrain conformance`).

Usage:
    pytest --pyargs crosstrain.conformance --crosstrain-backend jax
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
KNOWN_FAILURES = HERE / "known_failures.txt"

SECTIONS: dict[str, str] = {
    "test_registration": "registration & capabilities",
    "test_spec_validation": "spec validation",
    "test_layers": "layers: forward",
    "test_gradients": "gradients",
    "test_losses_metrics": "losses & metrics",
    "test_optimizers": "optimizers & schedules",
    "test_training": "training to a target",
    "test_state": "state round trip & exchange",
    "test_determinism": "determinism",
    "test_hooks": "hook order",
    "test_precision": "precision",
    "test_devices": "devices & data parallel",
}
"""Test module → section of the contract, in report order."""

_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 2, "failed": 3}


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("crosstrain", "crosstrain conformance suite")
    group.addoption(
        "--crosstrain-backend",
        default=None,
        help="backend under test (e.g. torch, jax, keras:jax); also $CROSSTRAIN_CONFORMANCE_BACKEND",
    )
    group.addoption(
        "--crosstrain-reference", default=None, help="reference backend (default: torch)"
    )
    group.addoption(
        "--crosstrain-json", default=None, metavar="FILE", help="write every result as JSON"
    )
    group.addoption(
        "--crosstrain-known-failures",
        default=None,
        metavar="FILE",
        help="extra known-failures file (`BACKEND TEST-ID-GLOB -- reason` per line)",
    )


class Session:
    """State of one conformance run: the backend, the reference, results, warnings."""

    def __init__(self, config: Any, backend: str, reference: str):
        self.config, self.backend, self.reference = config, backend, reference
        self.results: dict[str, dict[str, Any]] = {}
        self.known: list[tuple[str, str, str, str]] = []
        self.stale: list[str] = []
        self.header: dict[str, Any] = {}

    def describe(self) -> list[str]:
        """Header lines: backend, version, capabilities, reference, tolerances."""
        from .harness import Target
        from .tolerances import describe

        lines = [f"crosstrain conformance: backend {self.backend}, reference {self.reference}"]
        try:
            target = Target.load(self.backend)
            caps = target.caps
            available, reason = target.backend.is_available()
            version = target.backend.version() or "unknown"
            self.header = {
                "backend": self.backend,
                "version": version,
                "available": available,
                "capabilities": {k: _as_data(v) for k, v in vars(caps).items()},
            }
            lines.append(
                f"  version {version}" + ("" if available else f" (unavailable: {reason})")
            )
            for key, value in self.header["capabilities"].items():
                shown = ", ".join(value) if isinstance(value, list) else value
                lines.append(f"  {key}: {shown}")
        except Exception as err:
            self.header = {"backend": self.backend, "error": f"{type(err).__name__}: {err}"}
            lines.append(f"  cannot load the backend: {type(err).__name__}: {err}")
        lines.append("  tolerances (|a - b| <= atol + rtol * |b|):")
        lines += [f"    {line}" for line in describe()]
        return lines


def _as_data(value: Any) -> Any:
    """A declared capability as JSON data: sets sorted, export formats by name."""
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return [getattr(item, "name", item) for item in value]
    return value


def _session(config: Any) -> Session | None:
    return getattr(config, "_crosstrain_conformance", None)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "extended: a variant checked in the full run only (`-m 'not extended'`)"
    )
    from .harness import backend_name, reference_name

    name = backend_name(config)
    if name:
        config._crosstrain_conformance = Session(config, name, reference_name(config))


def pytest_report_header(config: Any) -> list[str] | None:
    session = _session(config)
    return session.describe() if session else None


def _is_ours(item: Any) -> bool:
    return Path(str(item.path)).resolve().parent == HERE


def _section(item: Any) -> str:
    stem = Path(str(item.path)).stem
    return SECTIONS.get(stem, stem)


def _read_known(paths: list[Path]) -> list[tuple[str, str, str, str]]:
    entries = []
    for path in paths:
        if not path.is_file():
            continue
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            head, _, reason = line.partition(" -- ")
            backend, _, pattern = head.strip().partition(" ")
            entries.append((backend, pattern.strip(), reason.strip(), f"{path.name}:{number}"))
    return entries


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    session = _session(config)
    ours = [item for item in items if _is_ours(item)]
    if session is None:
        skip = pytest.mark.skip(
            reason="no backend under test: pass --crosstrain-backend NAME "
            "or set CROSSTRAIN_CONFORMANCE_BACKEND"
        )
        for item in ours:
            item.add_marker(skip)
        return
    extra = config.getoption("crosstrain_known_failures", None)
    files = [KNOWN_FAILURES] + ([Path(extra)] if extra else [])
    session.known = [e for e in _read_known(files) if e[0] == session.backend]
    for backend, pattern, reason, where in session.known:
        glob = _glob(pattern)
        hits = [i for i in ours if glob.match(_short_id(i))]
        if not hits:
            session.stale.append(f"{where}: {backend} {pattern}: matches no test")
        for item in hits:
            item.add_marker(pytest.mark.xfail(reason=f"known failure: {reason}", strict=False))
            item._crosstrain_known = f"{where}: {backend} {pattern}"


def _glob(pattern: str) -> re.Pattern[str]:
    """`*` and `?` are wildcards; everything else, brackets included, is literal."""
    parts = {"*": ".*", "?": "."}
    return re.compile("".join(parts.get(c, re.escape(c)) for c in pattern) + r"\Z")


def _short_id(item: Any) -> str:
    return f"{Path(str(item.path)).name}::{item.name}"


def reproduction(item: Any, session: Session) -> str:
    """A shell command that runs this one test again on the same backend."""
    return shlex.join(
        [
            sys.executable,
            "-m",
            "pytest",
            f"{item.path}::{item.name}",
            "--crosstrain-backend",
            session.backend,
            "--crosstrain-reference",
            session.reference,
            "-p",
            "no:cacheprovider",
        ]
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    outcome = yield
    session = _session(item.config)
    if session is None or not _is_ours(item):
        return
    report = outcome.get_result()
    from .assertions import take_worst

    worst = take_worst() if report.when == "call" else None
    if report.when == "call" or report.outcome != "passed":
        if hasattr(report, "wasxfail"):
            status = "xfailed" if report.skipped else "xpassed"
        else:
            status = "failed" if report.failed else report.outcome
        entry = session.results.setdefault(
            item.nodeid,
            {
                "test": _short_id(item),
                "section": _section(item),
                "outcome": "passed",
                "worst_diff": None,
                "message": "",
                "reproduce": reproduction(item, session),
            },
        )
        if _RANK[status] >= _RANK[entry["outcome"]]:
            entry["outcome"] = status
            if status in ("skipped", "xfailed") and isinstance(report.longrepr, tuple):
                entry["message"] = str(report.longrepr[2]).removeprefix("Skipped: ")
            elif status == "failed":
                entry["message"] = _last_line(report)
        if worst is not None:
            entry["worst_diff"] = max(worst, entry["worst_diff"] or 0.0)
        if status == "xpassed":
            session.stale.append(f"{item._crosstrain_known}: passes now; remove the entry")
        if status == "failed":
            report.sections.append(("reproduce", entry["reproduce"]))


def _last_line(report: Any) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    session = _session(config)
    if session is None:
        return
    for line in session.stale:
        terminalreporter.write_line(f"warning: stale known failure {line}", yellow=True)
    failed = [r for r in session.results.values() if r["outcome"] == "failed"]
    if failed:
        terminalreporter.section("crosstrain: reproduce a failure")
        for result in failed:
            terminalreporter.write_line(result["reproduce"])
    path = config.getoption("crosstrain_json", None)
    if path:
        if not session.header:
            session.describe()
        Path(path).write_text(
            json.dumps(
                {
                    "header": session.header,
                    "reference": session.reference,
                    "sections": list(SECTIONS.values()),
                    "tolerances": _tolerances(),
                    "stale_known_failures": session.stale,
                    "results": list(session.results.values()),
                },
                indent=2,
            ),
            encoding="utf-8",
        )


def _tolerances() -> dict[str, dict[str, float]]:
    from .tolerances import TOLERANCES

    return {k: {"atol": t.atol, "rtol": t.rtol} for k, t in TOLERANCES.items()}


@pytest.fixture(scope="session")
def ct_target(request: Any) -> Any:
    """The backend under test as a `harness.Target` (skips when it is not installed)."""
    from .harness import Target

    session = _session(request.config)
    if session is None:
        pytest.skip("no backend under test")
    found = Target.load(session.backend)
    available, reason = found.backend.is_available()
    if not available:
        pytest.skip(f"{session.backend} is not available here: {reason}")
    return found


@pytest.fixture(scope="session")
def ct_reference(request: Any, ct_target: Any) -> Any:
    """The reference backend (skips when it is the backend under test or unavailable)."""
    from .harness import Target

    session = _session(request.config)
    if session.reference == ct_target.name:
        pytest.skip("the backend under test is the reference")
    found = Target.load(session.reference)
    available, reason = found.backend.is_available()
    if not available:
        pytest.skip(f"reference {session.reference} is not available here: {reason}")
    return found
