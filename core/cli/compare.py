"""`crosstrain compare SPEC --backends torch,jax,keras:jax`: one spec on several backends.

Each backend trains in its own Python process (frameworks and Keras engines do not share one
process well, and peak memory is then per backend), `--repeats` times, interleaved (a, b, a,
b ...), each process with `--threads` intra-op threads per framework (default 1, so the
backends get the same share of a shared machine). The table shows the final metrics, how far
each backend's per-epoch training loss is from the first backend's, time per training step
(per process: the median epoch after the first, which compiles, timed from the first to the last
training step, validation left out; over the repeats: median and min–max), time to first step
(build + compile + one step on a separate `build`) and peak resident memory; a PNG overlays the
loss curves.

Example:
    $ crosstrain compare examples/digits_mlp.yaml --backends torch,jax --set trainer.max_epochs=5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crosstrain.plugin.command import Command

NAME = "compare"
HELP = "train a spec on several backends (one process each) and compare accuracy and speed"


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the `compare` arguments."""
    parser.add_argument("spec", help="spec file (YAML or JSON)")
    parser.add_argument(
        "--backends", default="torch,jax", metavar="A,B", help="backends (default torch,jax)"
    )
    parser.add_argument("--max-epochs", type=int, metavar="N", help="sets trainer.max_epochs")
    from crosstrain.cli.inference import inference_options

    inference_options(parser)  # --set (several per flag) and --run-dir, as evaluate/predict
    parser.add_argument(
        "--plot", metavar="FILE", help="loss curves PNG (default runs/<name>/compare-<time>.png)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument(
        "--repeats", type=int, default=3, metavar="N", help="processes per backend (default 3)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="intra-op threads per framework (default 1)",
    )


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps every framework's intra-op threads at `threads` (torch and numpy
    read OMP/MKL, TensorFlow its two variables, XLA's CPU client its flags)."""
    n = str(threads)
    flags = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": n,
        "XLA_FLAGS": f"{flags}intra_op_parallelism_threads={n}",
    }


def measure(spec_data: dict[str, Any], backend: str) -> dict[str, Any]:
    """Trains the spec on `backend` in this process; history, timings and peak memory."""
    import crosstrain as ct
    import numpy as np
    from crosstrain.spec.resolve import load_data

    spec = ct.load_spec(spec_data)
    train, _ = load_data(spec)
    batch = spec.data.batch_size
    start = time.perf_counter()
    program = ct.build(spec, backend=backend)
    program.metrics_to_host([program.train_step(train.rows(np.arange(min(batch, len(train)))))])
    first_step = time.perf_counter() - start
    del program

    class Timer(ct.Callback):
        def __init__(self) -> None:
            self.epochs: list[float] = []
            self.began = 0.0

        def on_epoch_start(self, stage: str) -> None:
            if stage == "train":
                self.began = time.perf_counter()
            elif stage == "val":  # training steps only: validation is not timed
                self._stop()

        def on_epoch_end(self, stage: str) -> None:
            if stage == "train":
                self._stop()

        def _stop(self) -> None:
            if self.began:
                self.epochs.append(time.perf_counter() - self.began)
                self.began = 0.0

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
        "intra_op_threads": _intra_op_threads(),
    }


def _intra_op_threads() -> int | None:
    """The intra-op thread count torch uses here (None when torch is not loaded)."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def _launch(spec_data: dict[str, Any], backend: str, threads: int = 1) -> dict[str, Any]:
    command = [sys.executable, "-m", "crosstrain.cli.compare", json.dumps(spec_data), backend]
    env = {**os.environ, **thread_env(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"backend": backend, "error": tail[0]}
    return json.loads(lines[-1])


def combine(found: list[dict[str, Any]]) -> dict[str, Any]:
    """One backend's row from its repeats: the first run's metrics and curve, the median time
    per step and its spread (`ms_per_step_min`/`_max`, `ms_per_step_runs`), the median time to
    first step, the largest peak memory. An error in any repeat makes the row an error."""
    failed = [r for r in found if "error" in r]
    if failed:
        return failed[0]
    times = [r["ms_per_step"] for r in found]
    return {
        **found[0],
        "ms_per_step": statistics.median(times),
        "ms_per_step_min": min(times),
        "ms_per_step_max": max(times),
        "ms_per_step_runs": times,
        "first_step_s": statistics.median(r["first_step_s"] for r in found),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in found),
    }


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
    from crosstrain.spec.summary import format_table

    keys = list(dict.fromkeys(k for r in rows if "error" not in r for k in r["metrics"]))
    head = ["Backend", *keys, "Loss gap", "ms/step", "min–max", "First step s", "Peak RSS MB"]
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
                f"{r.get('ms_per_step_min', r['ms_per_step']):.3f}–"
                f"{r.get('ms_per_step_max', r['ms_per_step']):.3f}",
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
    from crosstrain.cli.inference import inference_spec
    from crosstrain.errors import CrosstrainError

    spec = inference_spec(args)
    changes: dict[str, Any] = {}
    if args.max_epochs is not None:
        changes["trainer.max_epochs"] = args.max_epochs
    changes.update({"trainer.progress": False, "trainer.loggers": [], "trainer.checkpoint": None})
    spec = spec.override(changes)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.repeats < 1 or args.threads < 1:
        raise CrosstrainError("--repeats and --threads must be at least 1")
    runs: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
    for repeat in range(args.repeats):  # interleaved, so drift on a shared machine hits all
        for backend in backends:
            print(f"training on {backend} ({repeat + 1}/{args.repeats}) ...", flush=True)
            runs[backend].append(_launch(spec.to_dict(), backend, args.threads))
    rows = [combine(found) for found in runs.values()]
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


COMMANDS = (Command(NAME, HELP, configure, run),)
