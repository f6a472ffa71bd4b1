"""Layer by layer: forward+backward of crosstrain's module for one layer type against the
framework's own layer doing the same maths, so a slow layer shows up by name.

    python -m benchmarks.layers [--backends torch,jax,keras:jax] [--layers dense,conv2d,...]
                                [--repeats 5] [--threads 1]

Each case is a one-layer model, crosstrain's module being `ct.build(spec, backend).native_model`,
against the stock layer: on torch `nn.Linear`, `nn.Conv1d`/`Conv2d`/`ConvTranspose2d`,
`nn.BatchNorm2d`, `nn.LayerNorm`, `nn.RMSNorm`, `nn.MultiheadAttention` (its
`scaled_dot_product_attention` path), `nn.LSTM`, `nn.GRU`, `nn.Embedding`,
`nn.MaxPool2d`/`AvgPool2d`, `nn.GELU` (`layers_torch.py`); on jax flax's `nnx.Linear`,
`nnx.Conv`, `nnx.ConvTranspose`, `nnx.BatchNorm`, `nnx.LayerNorm`, `nnx.RMSNorm`,
`nnx.MultiHeadAttention`, `nnx.RNN` of `nnx.LSTMCell`/`nnx.GRUCell`, `nnx.Embed`,
`nnx.max_pool`/`avg_pool`, `jax.nn.gelu`; on keras:jax Keras's own layer in a one-layer
`keras.Model` (`layers_jax.py`). Same sizes, epsilons and `same` padding on both sides.

Layouts: crosstrain's data is channels-last on every backend (Keras's convention); the torch
convolutions, pools and `BatchNorm2d` get NCHW (NCL for `Conv1d`) data, as a torch user writes
them, so on torch the crosstrain column includes what channels-last costs there (the permutes).
flax and Keras are channels-last themselves.

One step is the forward in training mode and the backward of `sum(y * g)` (a fixed random `g`)
into every parameter and the (float) input; on jax and keras:jax it is one jitted
`value_and_grad` (keras: `stateless_call`). Each side is warmed (compiled) first; then each
repeat times a block of steps (about `--block` seconds) of both sides, the side going first
alternating; µs/step is the process's CPU time per step (steadier than wall time on a shared
machine; wall time is in the JSON), median over repeats, the ratio (crosstrain / native) the
median of the per-repeat ratios. Each backend runs in its own process with `--threads` intra-op threads.
The table is printed and written to `benchmarks/results/layers-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .harness import ROOT, thread_env

BATCH = 32
SEQ = (64, 128)  # sequence length x features
IMAGE = (32, 32, 16)  # height x width x channels
CASES: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "dense": ({"type": "Dense", "units": 128}, SEQ),
    "conv1d": ({"type": "Conv1D", "filters": 128, "kernel_size": 3, "padding": "same"}, SEQ),
    "conv2d": ({"type": "Conv2D", "filters": 16, "kernel_size": 3, "padding": "same"}, IMAGE),
    "conv2d_transpose": (
        {"type": "Conv2DTranspose", "filters": 16, "kernel_size": 3, "strides": 2},
        (16, 16, 16),
    ),
    "batchnorm": ({"type": "BatchNorm"}, IMAGE),
    "layernorm": ({"type": "LayerNorm"}, SEQ),
    "rmsnorm": ({"type": "RMSNorm"}, SEQ),
    "attention": ({"type": "MultiHeadSelfAttention", "num_heads": 4, "head_dim": 32}, SEQ),
    "lstm": ({"type": "LSTM", "units": 128, "return_sequences": True}, SEQ),
    "gru": ({"type": "GRU", "units": 128, "return_sequences": True}, SEQ),
    "embedding": ({"type": "Embedding", "vocab_size": 10000, "dim": 128}, (64,)),
    "maxpool2d": ({"type": "MaxPool2D", "pool_size": 2}, IMAGE),
    "avgpool2d": ({"type": "AvgPool2D", "pool_size": 2}, IMAGE),
    "gelu": ({"type": "GELU"}, SEQ),
}
TOKENS = ("embedding",)  # cases whose input is integer token ids
VOCAB = 10000
# Without parameters the torch program refuses to build ("optimizer got an empty parameter
# list"), so these cases build `[layer, Dense(1)]` and time only the first child module.
PARAMETER_FREE = ("maxpool2d", "avgpool2d", "gelu")


def spec(name: str) -> dict[str, Any]:
    """The spec of a case: its layer (and a `Dense(1)` after a parameter-free one)."""
    layer, shape = CASES[name]
    layers = [dict(layer)] + ([{"type": "Dense", "units": 1}] if name in PARAMETER_FREE else [])
    return {
        "seed": 0,
        "model": {"input_shape": list(shape), "layers": layers},
        "loss": "mse",
        "optimizer": {"name": "sgd", "lr": 0.01},
    }


def inputs(name: str) -> Any:
    """The batch of a case as numpy (channels-last; token ids for `TOKENS`)."""
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (BATCH, *CASES[name][1])
    if name in TOKENS:
        return rng.integers(0, VOCAB, shape).astype(np.int64)
    return rng.normal(size=shape).astype(np.float32)


def time_sides(
    steps: dict[str, Callable[[], Any]], sync: Callable[[Any], Any], repeats: int, block: float
) -> dict[str, Any]:
    """Median CPU µs/step of each side (`crosstrain`, `native`) over alternating repeats (and
    the wall-clock medians)."""
    for step in steps.values():  # compile and warm both sides
        sync(step())
        sync(step())
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < block / 4 or calls < 2:
        sync(steps["native"]())
        calls += 1
    iterations = max(3, round(calls * block / (time.perf_counter() - start)))
    sides = list(steps)
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    wall: dict[str, list[float]] = {side: [] for side in sides}
    for repeat in range(repeats):
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            step, out = steps[side], None
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(iterations):
                out = step()
            sync(out)
            cpu[side].append(1e6 * (time.process_time() - start_cpu) / iterations)
            wall[side].append(1e6 * (time.perf_counter() - start) / iterations)
    ratios = [c / n for c, n in zip(cpu["crosstrain"], cpu["native"], strict=True)]
    wall_ratios = [c / n for c, n in zip(wall["crosstrain"], wall["native"], strict=True)]
    return {
        "crosstrain_us": statistics.median(cpu["crosstrain"]),
        "native_us": statistics.median(cpu["native"]),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "wall_ratio": statistics.median(wall_ratios),
        "wall_us": {side: statistics.median(wall[side]) for side in sides},
        "steps_per_repeat": iterations,
    }


def worker(backend: str, names: list[str], repeats: int, block: float) -> None:
    """In this process: every case on `backend`, one `RESULT` json line each."""
    if backend == "torch":
        from .layers_torch import SYNC, steps
    else:
        from .layers_jax import SYNC, keras_steps, nnx_steps

        steps = keras_steps if backend.startswith("keras") else nnx_steps
    for name in names:
        pair, native = steps(name)
        row = {"backend": backend, "layer": name, "native": native}
        row.update(time_sides(pair, SYNC, repeats, block))
        print("RESULT", json.dumps(row), flush=True)


def run(backend: str, names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """`worker` in a fresh process (one framework, `args.threads` intra-op threads)."""
    env = {**os.environ, **thread_env(args.threads)}
    if backend.startswith("keras:"):
        engine = backend.partition(":")[2]
        env.update(KERAS_BACKEND=engine, CROSSTRAIN_KERAS_ENGINE=engine, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "benchmarks.layers", "--worker", backend]
    command += ["--layers", ",".join(names), "--repeats", str(args.repeats)]
    command += ["--block", str(args.block)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    rows = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0:
        raise RuntimeError(f"{backend} failed:\n{done.stderr[-3000:]}")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | layer | crosstrain CPU µs | native CPU µs | ratio [range] | wall ratio | native layer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["ratio_range"]
        flag = " **slow**" if r["ratio"] > 1.15 else ""
        lines.append(
            f"| {r['backend']} | {r['layer']} | {r['crosstrain_us']:.0f} | {r['native_us']:.0f} "
            f"| {r['ratio']:.2f} [{low:.2f}–{high:.2f}]{flag} | {r['wall_ratio']:.2f} "
            f"| {r['native']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,jax,keras:jax")
    parser.add_argument("--layers", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--block", type=float, default=0.2, help="seconds per timed block")
    parser.add_argument("--name", default=f"layers-{datetime.date.today()}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = args.layers.split(",")
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown layers {unknown}; known: {', '.join(CASES)}")
    if args.worker:
        worker(args.worker, names, args.repeats, args.block)
        return 0
    rows = [row for backend in args.backends.split(",") for row in run(backend, names, args)]
    command = "python -m benchmarks.layers " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (
        f"# Layer by layer, forward+backward, crosstrain ÷ native ({datetime.date.today()})\n\n"
        f"`{command}`; batch {BATCH}, CPU time per step, {args.threads} intra-op thread(s), median of "
        f"{args.repeats} alternating repeats (ratio: median of per-repeat ratios, range in "
        "brackets). torch's native convs/pools/BatchNorm2d run on NCHW, crosstrain on "
        f"channels-last. Load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the "
        "start (a machine shared with other jobs: ratios are steadier than absolute µs). See "
        "the docstring of benchmarks/layers.py.\n\n"
    )
    text = header + table(rows)
    print(text, end="")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "threads": args.threads, "repeats": args.repeats, "rows": rows}
    (args.out / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(text)
    print(f"wrote {args.out / args.name}.{{json,md}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
