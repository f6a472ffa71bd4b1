"""`crosstrain conformance --backend NAME`: runs the conformance suite in a subprocess and
prints a table of the sections of the contract × passed/failed/skipped, with the worst
numeric difference seen in each; exits 1 when anything failed.

Example:
    $ crosstrain conformance --backend jax --report jax.md --json jax.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crosstrain.plugin.command import Command

NAME = "conformance"
HELP = "check a backend against the contract (runs the conformance suite)"
COLUMNS = ("passed", "failed", "skipped", "xfailed")


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the options of `crosstrain conformance`."""
    parser.add_argument("--backend", required=True, metavar="NAME", help="the backend under test")
    parser.add_argument(
        "--reference", default="torch", metavar="NAME", help="the reference backend (torch)"
    )
    parser.add_argument("--report", metavar="FILE", help="write a Markdown report")
    parser.add_argument(
        "--json", dest="json_path", metavar="FILE", help="write every result as JSON"
    )
    parser.add_argument(
        "--known-failures", metavar="FILE", help="your own known-failures file (see the report)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every section, fewer variants (leaves out tests marked `extended`)",
    )
    parser.add_argument("-k", dest="keyword", metavar="EXPR", help="only tests matching EXPR")
    # -v/--verbose (every command's) shows pytest's output; default: failures only


def pytest_command(args: argparse.Namespace, json_path: Path) -> list[str]:
    """The pytest command line that runs the suite for `args`."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "crosstrain.conformance",
        "--crosstrain-backend",
        args.backend,
        "--crosstrain-reference",
        args.reference,
        "--crosstrain-json",
        str(json_path),
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "-rfE",
        "--tb=short",
        "-q" if getattr(args, "verbosity", 0) > 0 else "-qq",
    ]
    if args.known_failures:
        command += ["--crosstrain-known-failures", str(Path(args.known_failures).resolve())]
    if args.keyword:
        command += ["-k", args.keyword]
    if args.quick:
        command += ["-m", "not extended"]
    return command


def summarize(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per section (in contract order): counts per outcome and the worst difference."""
    rows = {
        s: {"section": s, **dict.fromkeys(COLUMNS, 0), "worst_diff": None} for s in data["sections"]
    }
    for result in data["results"]:
        row = rows.setdefault(
            result["section"],
            {"section": result["section"], **dict.fromkeys(COLUMNS, 0), "worst_diff": None},
        )
        outcome = "passed" if result["outcome"] == "xpassed" else result["outcome"]
        row[outcome] = row.get(outcome, 0) + 1
        if result["worst_diff"] is not None:
            row["worst_diff"] = max(result["worst_diff"], row["worst_diff"] or 0.0)
    return list(rows.values())


def _diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def format_summary(data: dict[str, Any]) -> str:
    """The section table as terminal text."""
    from crosstrain.spec.summary import format_table

    rows = summarize(data)
    body = [[r["section"], *(str(r[c]) for c in COLUMNS), _diff(r["worst_diff"])] for r in rows]
    totals = [sum(r[c] for r in rows) for c in COLUMNS]
    body.append(["total", *(str(t) for t in totals), _diff(_worst(rows))])
    return format_table(["Section", *COLUMNS, "worst |diff|"], body, right=range(1, 6))


def _worst(rows: list[dict[str, Any]]) -> float | None:
    values = [r["worst_diff"] for r in rows if r["worst_diff"] is not None]
    return max(values) if values else None


def markdown_report(data: dict[str, Any], command: list[str]) -> str:
    """The published report: backend, capabilities, tolerances, table, failures, skips."""
    header = data["header"]
    lines = [
        f"# Conformance report: {header.get('backend')}",
        "",
        f"- backend: `{header.get('backend')}` version {header.get('version', '?')}",
        f"- reference: `{data['reference']}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"python {sys.version.split()[0]}",
        f"- command: `crosstrain conformance --backend {header.get('backend')}`",
        "",
        "## Declared capabilities",
        "",
    ]
    for key, value in header.get("capabilities", {}).items():
        shown = ", ".join(value) if isinstance(value, list) else value
        lines.append(f"- {key}: {shown}")
    lines += [
        "",
        "## Tolerances",
        "",
        "`|a - b| <= atol + rtol * |b|`",
        "",
        "| kind | atol | rtol |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {t['atol']:g} | {t['rtol']:g} |" for k, t in data["tolerances"].items()]
    rows = summarize(data)
    lines += ["", "## Results", "", "| section | " + " | ".join(COLUMNS) + " | worst abs diff |"]
    lines.append("|---|" + "---:|" * (len(COLUMNS) + 1))
    for r in rows:
        lines.append(
            f"| {r['section']} | "
            + " | ".join(str(r[c]) for c in COLUMNS)
            + f" | {_diff(r['worst_diff'])} |"
        )
    totals = [sum(r[c] for r in rows) for c in COLUMNS]
    lines.append(
        "| **total** | " + " | ".join(str(t) for t in totals) + f" | {_diff(_worst(rows))} |"
    )
    failed = [r for r in data["results"] if r["outcome"] == "failed"]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines += [f"- `{r['test']}`: {r['message']}", f"  reproduce: `{r['reproduce']}`"]
    known = [r for r in data["results"] if r["outcome"] == "xfailed"]
    if known:
        lines += ["", "## Known failures", ""]
        lines += [f"- `{r['test']}`: {r['message']}" for r in known]
    reasons: dict[str, int] = {}
    for r in data["results"]:
        if r["outcome"] == "skipped":
            reasons[r["message"]] = reasons.get(r["message"], 0) + 1
    if reasons:
        lines += ["", "## Skipped", "", "| tests | reason |", "|---:|---|"]
        lines += [
            f"| {n} | {reason} |" for reason, n in sorted(reasons.items(), key=lambda i: -i[1])
        ]
    if data.get("stale_known_failures"):
        lines += ["", "## Stale known failures", ""]
        lines += [f"- {s}" for s in data["stale_known_failures"]]
    return "\n".join(lines) + "\n"


PYTEST_USAGE_ERROR, PYTEST_NO_TESTS = 4, 5


def selection_error(args: argparse.Namespace, returncode: int, data: dict[str, Any]) -> str | None:
    """Why the run selected nothing (`-k` matched no test, or is not an expression), else None."""
    if data["results"] or returncode not in (PYTEST_USAGE_ERROR, PYTEST_NO_TESTS):
        return None
    from crosstrain.conformance.plugin import SECTIONS

    sections = ", ".join(SECTIONS)
    if args.keyword is None:
        return f"no conformance test was selected (sections: {sections})"
    if returncode == PYTEST_USAGE_ERROR:
        return f"-k {args.keyword!r} is not a valid test selection (pytest's reason is above)"
    quick = " with --quick" if args.quick else ""
    return f"-k {args.keyword!r} selected no conformance test{quick} (sections: {sections})"


def run(args: argparse.Namespace) -> int:
    """Runs the suite for `args.backend`; 0 when nothing failed, 1 otherwise, 2 if it could not run."""
    with tempfile.TemporaryDirectory(prefix="crosstrain-conformance-") as tmp:
        json_path = Path(tmp) / "results.json"
        command = pytest_command(args, json_path)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        blocked = [b for b in env.get("CROSSTRAIN_BLOCK_PLUGINS", "").split(",") if b]
        if getattr(args, "no_plugin", None):
            env["CROSSTRAIN_BLOCK_PLUGINS"] = ",".join(blocked + args.no_plugin)
        done = subprocess.run(command, env=env)
        if not json_path.is_file():
            print(
                f"error: the conformance suite did not run (pytest exit {done.returncode})",
                file=sys.stderr,
            )
            return 2
        data = json.loads(json_path.read_text(encoding="utf-8"))
    header = data["header"]
    if "error" in header:
        print(f"error: backend {args.backend!r}: {header['error']}", file=sys.stderr)
        return 2
    selection = selection_error(args, done.returncode, data)
    if selection:
        print(f"error: {selection}", file=sys.stderr)
        return 2
    print(
        f"\nconformance of {header['backend']} {header.get('version', '')} against {data['reference']}"
    )
    print(format_summary(data))
    for stale in data.get("stale_known_failures", []):
        print(f"warning: stale known failure {stale}", file=sys.stderr)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(markdown_report(data, command), encoding="utf-8")
        print(f"report: {args.report}")
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(data, indent=2), encoding="utf-8")
    failed = any(r["outcome"] == "failed" for r in data["results"])
    if failed or done.returncode not in (0, 1):
        return 1
    return 0


COMMANDS = (Command(NAME, HELP, configure, run),)
