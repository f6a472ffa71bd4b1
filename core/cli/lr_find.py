"""`crosstrain lr-find SPEC`: the learning-rate range test on any backend, a plot of loss
against lr, and the suggested lr as the `--set` that uses it (or written into a spec file).

Example:
    $ crosstrain lr-find examples/digits_mlp.yaml --backend jax --plot lr_find.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crosstrain import api
from crosstrain.cli.inference import backend_option, inference_options, inference_spec
from crosstrain.errors import CrosstrainError, MissingDependency
from crosstrain.output import LOG
from crosstrain.plugin.command import Command


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of `crosstrain lr-find`."""
    parser.add_argument("spec", help="spec file (YAML or JSON)")
    backend_option(parser)
    inference_options(parser)
    parser.add_argument("--min-lr", type=float, default=1e-7, help="first lr (default 1e-7)")
    parser.add_argument("--max-lr", type=float, default=10.0, help="last lr (default 10)")
    parser.add_argument(
        "--steps", type=int, default=100, help="optimizer steps of the sweep (default 100)"
    )
    parser.add_argument(
        "--divergence",
        type=float,
        default=4.0,
        help="stop once the smoothed loss exceeds this times its best (default 4)",
    )
    parser.add_argument(
        "--plot", metavar="FILE", default="lr_find.png", help="where to draw the curve (PNG)"
    )
    parser.add_argument(
        "--write",
        metavar="SPEC",
        help="write the spec (with --set applied) and optimizer.lr set to the suggestion here",
    )


def run(args: argparse.Namespace) -> int:
    """Runs the range test; prints the suggestion and the `--set` that applies it."""
    spec = inference_spec(args)
    found = api.lr_find(
        spec,
        backend=args.backend,
        min_lr=args.min_lr,
        max_lr=args.max_lr,
        steps=args.steps,
        divergence=args.divergence,
    )
    if not found.losses:
        raise CrosstrainError("lr-find: no training step ran (is the training data empty?)")
    end = "the loss diverged" if found.stopped_at is not None else "all steps ran"
    LOG.info(
        f"lr range test on {found.backend}: {len(found.losses)} steps, lr {found.lrs[0]:.2g} "
        f"to {found.lrs[-1]:.2g} ({end}); loss {found.losses[0]:.4g} -> best "
        f"{min(found.smoothed, default=float('nan')):.4g} (smoothed)"
    )
    try:
        found.plot(args.plot)
        LOG.info(f"plot: {args.plot}")
    except MissingDependency as err:
        LOG.info(f"plot skipped: {err}")
    if found.suggestion is None:
        print("no suggestion: the loss never fell; try a larger --max-lr or more --steps")
        return 1
    print(f"suggested lr: {found.suggestion:.3g}")
    print(f"use it: crosstrain fit {args.spec} --set optimizer.lr={found.suggestion:.3g}")
    if args.write:
        chosen = spec.override({"optimizer.lr": float(f"{found.suggestion:.3g}")})
        Path(args.write).write_text(chosen.to_yaml(), encoding="utf-8")
        print(f"written: {args.write}")
    return 0


COMMANDS = (
    Command("lr-find", "learning-rate range test: loss against lr, a suggested lr", configure, run),
)
