"""Two variants of one spec, timed against each other on every backend.

A `Comparison` names the variants and builds the spec of each. Each backend runs in its own
process with `--threads` intra-op threads; each repeat fits both variants, alternating which goes
first, and times every training epoch but the first (compilation); a variant's step time in a
repeat is its fastest epoch (the least disturbed by other work on the machine). The table shows
the fastest step of each variant over all repeats and the median (range) of the per-repeat
ratios. The comparisons are `layer_forms.py` (array-API layer vs native classes) and
`dropout_masks.py` (shared vs native dropout masks):

    python -m benchmarks.layer_forms [--backends torch,jax,keras:jax] [--repeats 3]
    python -m benchmarks.dropout_masks [--backends ...] [--repeats 3]

print a table and write `benchmarks/results/<comparison>-<date>.md`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crosstrain.train.callbacks import Callback

from .harness import ROOT, thread_env

EPOCHS, STEPS, BATCH = 6, 40, 128


@dataclass(frozen=True)
class Comparison:
    """Two variants of a spec.

    Attributes:
        module: the module defining it as `COMPARISON` (how a worker process finds it).
        title: the heading of the report; `name` its file stem.
        model: what the table's first line says was trained.
        variants: the two variant names, each passed to `spec`; the ratio is first / second.
        labels: the table's column titles of the two variants.
        spec: the spec (a dict) of a variant; data is `BATCH * STEPS` rows of `features`.
        setup: run once in the worker before fitting (e.g. registering layers).
    """

    module: str
    name: str
    title: str
    model: str
    variants: tuple[str, str]
    labels: tuple[str, str]
    spec: Callable[[str], dict[str, Any]]
    features: int = 64
    setup: Callable[[], None] = field(default=lambda: None)


class EpochTimer(Callback):
    """Seconds of each training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_start(self, stage: str) -> None:
        if stage == "train":
            self._start = time.perf_counter()

    def on_epoch_end(self, stage: str) -> None:
        if stage == "train":
            self.seconds.append(time.perf_counter() - self._start)


def trainer_options() -> dict[str, Any]:
    """The `trainer` section every variant uses: EPOCHS epochs of STEPS steps, no output."""
    return {"max_epochs": EPOCHS, "progress": False, "log_every_n_steps": STEPS}


def measure(comparison: Comparison, backend: str, repeats: int) -> dict[str, Any]:
    """In this process: per repeat, the fastest step time (ms) of each variant and their ratio."""
    import crosstrain as ct
    import numpy as np

    comparison.setup()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS, comparison.features)).astype(np.float32)
    y = rng.integers(0, 10, BATCH * STEPS)
    first, second = comparison.variants
    rows = []
    for repeat in range(repeats):
        step_ms = {}
        for variant in (first, second) if repeat % 2 == 0 else (second, first):
            timer = EpochTimer()
            spec = comparison.spec(variant)
            ct.fit(spec, backend=backend, data=(x, y), callbacks=[timer], run_dir=False)
            step_ms[variant] = 1000 * min(timer.seconds[1:]) / STEPS
        rows.append(step_ms)
    ratios = [r[first] / r[second] for r in rows]
    return {
        "backend": backend,
        "first_ms": min(r[first] for r in rows),
        "second_ms": min(r[second] for r in rows),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }


def worker(module: str, backend: str, repeats: int) -> None:
    """The worker process's entry: measures `module.COMPARISON` and prints the result."""
    comparison = importlib.import_module(module).COMPARISON
    print("RESULT", json.dumps(measure(comparison, backend, repeats)))


def run(comparison: Comparison, backend: str, repeats: int, threads: int) -> dict[str, Any]:
    """`measure` in a fresh process (one framework, `threads` intra-op threads)."""
    env = {**os.environ, **thread_env(threads)}
    if backend.startswith("keras:"):
        engine = backend.partition(":")[2]
        env.update(KERAS_BACKEND=engine, CROSSTRAIN_KERAS_ENGINE=engine, TF_CPP_MIN_LOG_LEVEL="2")
    code = (
        "import sys; from benchmarks.spec_variants import worker; "
        "worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, comparison.module, backend, str(repeats)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def table(comparison: Comparison, results: list[dict[str, Any]], threads: int) -> str:
    first, second = comparison.labels
    lines = [
        f"Train step of {comparison.model}, batch {BATCH}, CPU, {threads} intra-op thread(s); "
        "fastest epoch per variant; ratio: median over repeats (range in brackets).",
        "",
        f"| backend | {first} (ms/step) | {second} (ms/step) | ratio |",
        "|---|---|---|---|",
    ]
    for r in results:
        low, high = r["ratio_range"]
        lines.append(
            f"| {r['backend']} | {r['first_ms']:.3f} | {r['second_ms']:.3f} | "
            f"{r['ratio']:.3f} [{low:.3f}–{high:.3f}] |"
        )
    return "\n".join(lines) + "\n"


def main(comparison: Comparison, argv: list[str] | None = None) -> int:
    """The command line of a comparison module (see the module docstring)."""
    parser = argparse.ArgumentParser(description=comparison.title)
    parser.add_argument("--backends", default="torch,jax,keras:jax")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="the markdown file to write")
    args = parser.parse_args(argv)
    results = [run(comparison, b, args.repeats, args.threads) for b in args.backends.split(",")]
    text = table(comparison, results, args.threads)
    print(text, end="")
    out = args.out or (
        ROOT / "benchmarks" / "results" / f"{comparison.name}-{datetime.date.today()}.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {comparison.title}\n\n{text}")
    print(f"wrote {out}")
    return 0
