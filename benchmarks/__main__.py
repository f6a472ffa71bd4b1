"""`python -m benchmarks`: crosstrain vs hand-written native loops, Lightning and Keras fit.

Writes `benchmarks/results/<date>-<machine>.json`, `.md` and `.png` (or under `--out`).

Example:
    $ python -m benchmarks --tasks A,B --backends torch --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

from .harness import measure_startup, run_all
from .report import chart, markdown
from .tasks import TASKS

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_BACKENDS = "torch,jax,keras:jax,keras:tensorflow,keras:torch"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tasks", default="A,B,C,D", help="comma-separated task keys (A,B,C,D)")
    parser.add_argument(
        "--backends",
        default=DEFAULT_BACKENDS,
        help=f"crosstrain backends, each against its native loop (default {DEFAULT_BACKENDS}); "
        "uninstalled ones are skipped",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: per task)")
    parser.add_argument("--epochs", type=int, help="epochs per run; the first is warm-up")
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads per framework (default 1)"
    )
    parser.add_argument("--no-lightning", action="store_true", help="skip PyTorch Lightning")
    parser.add_argument("--startup-repeats", type=int, default=5, help="import/--help timings")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--name", help="file stem (default <date>-<machine>)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Runs the benchmarks; returns the path of the JSON results."""
    args = parse_args(argv)
    tasks = [t.strip().upper() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; choose from {sorted(TASKS)}")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = run_all(
        tasks,
        backends,
        args.repeats,
        args.steps,
        args.epochs,
        args.threads,
        lightning=not args.no_lightning,
        timeout=args.timeout,
        log=lambda line: print(line, flush=True),
    )
    results["startup"] = measure_startup(args.startup_repeats) if args.startup_repeats else None
    results["date"] = time.strftime("%Y-%m-%d")
    results["command"] = "python -m benchmarks " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    stem = args.name or f"{results['date']}-{platform.node() or 'machine'}"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{stem}.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    text = markdown(results)
    (args.out / f"{stem}.md").write_text(text, encoding="utf-8")
    chart(results, args.out / f"{stem}.png")
    print(text)
    return path


if __name__ == "__main__":
    main()
