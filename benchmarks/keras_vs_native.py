"""crosstrain's Keras backend against plain Keras `model.fit`, per engine, one process each.

Both sides train the same MLP (Adam, softmax cross-entropy from logits, batches in shuffled
order) on the same numpy data: plain Keras builds a `keras.Sequential` of `Dense` layers and
calls `model.fit(verbose=0)`; crosstrain calls `crosstrain.fit(spec, backend="keras:<engine>")`
(the whole trainer: hooks, metric pulls every 50 steps, history). Variants:

- `fit`: `crosstrain.fit`, one compiled step per batch (as `model.fit` with the default
  `steps_per_execution=1`);
- `fit K=10`: `trainer.steps_per_execution: 10` (ten steps per compiled call).

Each timed crosstrain epoch is paired with one `model.fit` epoch run right after it (from the
fit's `on_epoch_end` hook, outside the timed span); the ratio is the median over the pairs, the
µs/step columns are each side's best epoch. Compiling epochs are not timed.

Run: `python -m benchmarks.keras_vs_native` (add `--quick` for a short check, `--engines jax`
to pick engines). Each engine runs in its own process (Keras holds one engine per process).
Writes the table to stdout, `benchmarks/results/keras.md` and `benchmarks/results/keras.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("jax", "tensorflow", "torch")
PULL_EVERY = 50
CONFIGS = {
    "small": {"sizes": (64, 128, 128, 10), "batch": 32, "steps_per_epoch": 300},
    "large": {"sizes": (784, 1024, 1024, 10), "batch": 256, "steps_per_epoch": 30},
}


def make_spec(sizes: tuple[int, ...], batch: int, epochs: int, k: int = 1) -> Any:
    """The benchmark MLP as a crosstrain spec (no metrics, files or progress bar)."""
    import crosstrain as ct

    layers: list[dict[str, Any]] = []
    for units in sizes[1:-1]:
        layers += [{"type": "Dense", "units": units}, {"type": "ReLU"}]
    layers.append({"type": "Dense", "units": sizes[-1]})
    trainer = {"max_epochs": epochs, "log_every_n_steps": PULL_EVERY, "steps_per_execution": k}
    trainer.update({"progress": False, "loggers": [], "checkpoint": None})
    data = {"name": "bench", "seed": 0, "data": {"batch_size": batch, "shuffle": True}}
    model = {"input_shape": [sizes[0]], "layers": layers}
    return ct.load_spec(
        {**data, "model": model, "optimizer": {"name": "adam", "lr": 1e-3}, "trainer": trainer}
    )


class KerasFit:
    """Plain Keras: a Sequential MLP trained with `model.fit`, one epoch per call, timed."""

    def __init__(self, sizes: tuple[int, ...], batch: int, x: np.ndarray, y: np.ndarray):
        import keras

        self.keras, self.batch, self.x, self.y = keras, batch, x, y
        layers = [keras.Input((sizes[0],))]
        layers += [keras.layers.Dense(units, activation="relu") for units in sizes[1:-1]]
        layers.append(keras.layers.Dense(sizes[-1]))
        self.model = keras.Sequential(layers)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        self.run_epoch()

    def run_epoch(self) -> float:
        times: list[float] = []

        class Timer(self.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                times.append(time.perf_counter())

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                times.append(time.perf_counter() - times.pop())

        self.model.fit(
            self.x,
            self.y,
            batch_size=self.batch,
            epochs=1,
            shuffle=True,
            verbose=0,
            callbacks=[Timer()],
        )
        return times[0]


def measure(engine: str, name: str, config: dict[str, Any], epochs: int) -> dict[str, Any]:
    """Paired epochs of crosstrain fit (K=1 and K=10) and Keras fit for one MLP size."""
    import crosstrain as ct

    from .paired import fit_pairs, mlp_data

    sizes, batch, steps = config["sizes"], config["batch"], config["steps_per_epoch"]
    x, y = mlp_data(config)
    native = KerasFit(sizes, batch, x, y)
    pairs = fit_pairs(
        native,
        lambda k, timer: ct.fit(
            make_spec(sizes, batch, epochs + 1, k),
            backend=f"keras:{engine}",
            data=(x, y),
            run_dir=False,
            callbacks=[timer],
        ),
    )
    native_best = min(n for runs in pairs.values() for n, _ in runs)
    return {
        "engine": engine,
        "config": name,
        "mlp": "-".join(map(str, sizes)),
        "batch": batch,
        "steps_per_epoch": steps,
        "us_per_step": {"keras fit": native_best / steps * 1e6}
        | {v: min(t for _, t in runs) / steps * 1e6 for v, runs in pairs.items()},
        "ratio_to_keras_fit": {
            v: float(np.median([t / n for n, t in runs])) for v, runs in pairs.items()
        },
        "pairs": pairs,
    }


def run_engine(engine: str, epochs: int, quick: bool) -> list[dict[str, Any]]:
    """Measures every config on one engine (call in a process of that engine only)."""
    configs = (
        {k: dict(v, steps_per_epoch=max(v["steps_per_epoch"] // 3, 10)) for k, v in CONFIGS.items()}
        if quick
        else CONFIGS
    )
    return [measure(engine, name, config, epochs) for name, config in configs.items()]


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: best µs/step of each side and the median paired ratio to Keras fit."""
    variants = list(rows[0]["ratio_to_keras_fit"])
    head = (
        "| engine | model | batch | keras fit µs/step | "
        + " | ".join(f"crosstrain {v} µs/step (÷ keras fit)" for v in variants)
        + " |"
    )
    lines = [head, "|---" * (4 + len(variants)) + "|"]
    for r in rows:
        cells = " | ".join(
            f"{r['us_per_step'][v]:.1f} ({r['ratio_to_keras_fit'][v]:.3f})" for v in variants
        )
        lines.append(
            f"| {r['engine']} | {r['mlp']} | {r['batch']} | {r['us_per_step']['keras fit']:.1f} | {cells} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--quick", action="store_true", help="fewer steps per epoch")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_engine(args.worker, args.epochs, args.quick)))
        return
    rows = []
    for engine in args.engines.split(","):
        command = [sys.executable, "-m", "benchmarks.keras_vs_native", "--worker", engine]
        command += ["--epochs", str(args.epochs)] + (["--quick"] if args.quick else [])
        done = subprocess.run(
            command,
            env={**os.environ, "KERAS_BACKEND": engine},
            cwd=RESULTS.parent.parent,
            capture_output=True,
            text=True,
        )
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if done.returncode or line is None:
            print(f"{engine}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        rows += json.loads(line[len("RESULT ") :])
    if not rows:
        raise SystemExit("no engine could be measured")
    from importlib.metadata import version

    threads = os.environ.get("OMP_NUM_THREADS", "default")
    header = (
        f"Keras backend vs plain Keras model.fit, cpu ({platform.machine()}, keras "
        f"{version('keras')}, {os.cpu_count()} cores, OMP_NUM_THREADS={threads})"
    )
    text = header + "\n\n" + table(rows)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "keras.md").write_text(text + "\n", encoding="utf-8")
    (RESULTS / "keras.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
