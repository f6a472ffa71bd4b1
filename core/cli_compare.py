"""`crosstrain compare SPEC --backends torch,jax,keras:jax`: one spec on several backends.

Each backend trains in its own Python process (frameworks and Keras engines do not share one
process well, and peak memory is then per backend). The table shows the final metrics, how far
each backend's per-epoch training loss is from the first backend's, time per step (median epoch
after the first, which compiles), time to first step (build + compile + one step on a separate
`build`) and peak resident memory; a PNG overlays the loss curves.

Example:
    $ crosstrain compare examples/digits_mlp.yaml --backends torch,jax --set trainer.max_epochs=5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NAME = "compare"
HELP = "train a spec on several backends (one process each) and compare accuracy and speed"


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the `compare` arguments."""
    parser.add_argument("spec", help="spec file (YAML or JSON)")
    parser.add_argument(
        "--backends", default="torch,jax", metavar="A,B", help="backends (default torch,jax)"
    )
    parser.add_argument("--max-epochs", type=int, metavar="N", help="sets trainer.max_epochs")
    from .cli import inference_options

    inference_options(parser)  # --set (several per flag) and --run-dir, as evaluate/predict
    parser.add_argument(
        "--plot", metavar="FILE", help="loss curves PNG (default runs/<name>/compare-<time>.png)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")


def measure(spec_data: dict[str, Any], backend: str) -> dict[str, Any]:
    """Trains the spec on `backend` in this process; history, timings and peak memory."""
    import crosstrain as ct
    from crosstrain.resolve import load_data

    spec = ct.load_spec(spec_data)
    train, _ = load_data(spec)
    batch = spec.data.batch_size
    start = time.perf_counter()
    program = ct.build(spec, backend=backend)
    program.metrics_to_host([program.train_step((train.x[:batch], train.y[:batch]))])
    first_step = time.perf_counter() - start
    del program

    class Timer(ct.Callback):
        def __init__(self) -> None:
            self.epochs: list[float] = []
            self.began = 0.0

        def on_epoch_start(self, stage: str) -> None:
            if stage == "train":
                self.began = time.perf_counter()

        def on_epoch_end(self, stage: str) -> None:
            if stage == "train":
                self.epochs.append(time.perf_counter() - self.began)

    timer = Timer()
    result = ct.fit(spec, backend=backend, run_dir=False, callbacks=[timer])
    steps = max(1, len(train) // batch if spec.data.drop_last else -(-len(train) // batch))
    timed = timer.epochs[1:] or timer.epochs
    return {
        "backend": backend,
        "metrics": result.metrics,
        "loss_curve": [h.get("train_loss", float("nan")) for h in result.history],
        "ms_per_step": 1e3 * statistics.median(timed) / steps if timed else float("nan"),
        "first_step_s": first_step,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _launch(spec_data: dict[str, Any], backend: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "crosstrain.cli_compare", json.dumps(spec_data), backend]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"backend": backend, "error": tail[0]}
    return json.loads(lines[-1])


def parity(rows: list[dict[str, Any]]) -> None:
    """Sets each row's `loss_gap`: the largest relative gap of its per-epoch training loss to
    the first successful backend's."""
    done = [r for r in rows if "error" not in r]
    if not done:
        return
    reference = done[0]["loss_curve"]
    for row in done:
        pairs = list(zip(row["loss_curve"], reference, strict=False))
        gaps = [abs(a - b) / max(abs(b), 1e-12) for a, b in pairs]
        row["loss_gap"] = max(gaps) if gaps else float("nan")


def table(rows: list[dict[str, Any]]) -> str:
    """The comparison as an aligned text table."""
    from .summary import format_table

    keys = list(dict.fromkeys(k for r in rows if "error" not in r for k in r["metrics"]))
    head = ["Backend", *keys, "Loss gap", "ms/step", "First step s", "Peak RSS MB"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["backend"], *["-"] * (len(head) - 2), f"error: {r['error']}"])
            continue
        body.append(
            [
                r["backend"],
                *[f"{r['metrics'].get(k, float('nan')):.4f}" for k in keys],
                f"{r['loss_gap']:.2e}",
                f"{r['ms_per_step']:.3f}",
                f"{r['first_step_s']:.2f}",
                f"{r['peak_rss_mb']:.0f}",
            ]
        )
    return format_table(head, body)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Overlaid per-epoch training loss curves; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if "error" not in r:
            epochs = range(1, len(r["loss_curve"]) + 1)
            ax.plot(epochs, r["loss_curve"], marker="o", label=r["backend"], alpha=0.8)
    ax.set(xlabel="epoch", ylabel="train loss", title=title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(args: argparse.Namespace) -> int:
    """Runs `compare`; 1 when any backend failed."""
    from .cli import inference_spec

    spec = inference_spec(args)
    changes: dict[str, Any] = {}
    if args.max_epochs is not None:
        changes["trainer.max_epochs"] = args.max_epochs
    changes.update({"trainer.progress": False, "trainer.loggers": [], "trainer.checkpoint": None})
    spec = spec.override(changes)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows = []
    for backend in backends:
        print(f"training on {backend} ...", flush=True)
        rows.append(_launch(spec.to_dict(), backend))
    parity(rows)
    print()
    print(table(rows))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(args.plot or Path(spec.trainer.run_dir) / spec.name / f"compare-{stamp}.png")
    if plot(rows, path, f"{spec.name}: training loss per epoch"):
        print(f"\nloss curves: {path}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]), sys.argv[2])), flush=True)
