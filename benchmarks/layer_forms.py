"""A layer written once (array-API `forward`) against the same layer with native classes.

The model is an MLP with two RMSNorm layers (64-256-RMSNorm-ReLU-256-RMSNorm-ReLU-10, batch
128). `ArrayRMSNorm` has only `params` and an array-API `forward`, which each backend wraps in
its generic module (`backends/<name>/array_layer.py`); `NativeRMSNorm` is the same layer with a
`torch_module`, `jax_module` and `keras_layer` (the speed-up a plugin may add). Each backend runs
in its own process with one intra-op thread; each repeat fits both forms, alternating which goes
first, and times every training epoch but the first (compilation); a form's step time in a
repeat is its fastest epoch (the least disturbed by other work on the machine). The table shows
the fastest step of each form over all repeats and the median (range) of the per-repeat ratios.

    python -m benchmarks.layer_forms [--backends torch,jax,keras:jax] [--repeats 3]

prints a table and writes `benchmarks/results/layer-forms-<date>.md`.
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
from pathlib import Path
from typing import Any, Literal

from crosstrain.nn.layers import Layer, ParamSpec, Shape
from crosstrain.train.callbacks import Callback
from pydantic import Field

from .harness import ROOT, thread_env

EPOCHS, STEPS, BATCH = 6, 40, 128


class ArrayRMSNorm(Layer):
    """RMSNorm written once: `x / sqrt(mean(x**2) + epsilon) * scale` against the array API."""

    type: Literal["ArrayRMSNorm"] = "ArrayRMSNorm"
    epsilon: float = Field(1e-6, gt=0.0)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        return {"scale": ParamSpec((input_shape[-1],), "ones")}

    def forward(self, xp, params, x, training=False, rng=None):
        ms = xp.mean(x * x, axis=-1, keepdims=True)
        return x / xp.sqrt(ms + self.epsilon) * params["scale"]


class NativeRMSNorm(ArrayRMSNorm):
    """The same layer with one native class per backend, which every backend prefers."""

    type: Literal["NativeRMSNorm"] = "NativeRMSNorm"  # type: ignore[assignment]

    def torch_module(self, input_shape: Shape) -> Any:
        import torch

        class TorchRMSNorm(torch.nn.Module):
            def __init__(self, features: int, epsilon: float):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.ones(features))
                self.epsilon = epsilon

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                ms = x.pow(2).mean(-1, keepdim=True)
                return x * torch.rsqrt(ms + self.epsilon) * self.scale

        return TorchRMSNorm(input_shape[-1], self.epsilon)

    def jax_module(self, input_shape: Shape) -> Any:
        import jax
        import jax.numpy as jnp
        from flax import nnx

        class JaxRMSNorm(nnx.Module):
            def __init__(self, features: int, epsilon: float):
                self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
                self.epsilon = epsilon

            def __call__(self, x: jax.Array) -> jax.Array:
                ms = jnp.mean(x * x, axis=-1, keepdims=True)
                return x * jax.lax.rsqrt(ms + self.epsilon) * self.scale[...].astype(x.dtype)

        return JaxRMSNorm(input_shape[-1], self.epsilon)

    def keras_layer(self, input_shape: Shape, **options: Any) -> Any:
        import keras

        class KerasRMSNorm(keras.layers.Layer):
            def __init__(self, epsilon: float, **kwargs: Any):
                super().__init__(**kwargs)
                self.epsilon = epsilon

            def build(self, shape: Any) -> None:
                self.scale = self.add_weight(name="scale", shape=(shape[-1],), initializer="ones")

            def call(self, x: Any) -> Any:
                ms = keras.ops.mean(x * x, axis=-1, keepdims=True)
                return x * keras.ops.rsqrt(ms + self.epsilon) * keras.ops.cast(self.scale, x.dtype)

        return KerasRMSNorm(self.epsilon, **options)


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


def spec(layer_type: str) -> dict[str, Any]:
    norm = {"type": layer_type}
    return {
        "name": f"layer-forms-{layer_type}",
        "seed": 0,
        "model": {
            "input_shape": [64],
            "layers": [
                {"type": "Dense", "units": 256},
                norm,
                {"type": "ReLU"},
                {"type": "Dense", "units": 256},
                norm,
                {"type": "ReLU"},
                {"type": "Dense", "units": 10},
            ],
        },
        "data": {"batch_size": BATCH, "shuffle": False},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 1e-3},
        "trainer": {"max_epochs": EPOCHS, "progress": False, "log_every_n_steps": STEPS},
    }


def measure(backend: str, repeats: int) -> dict[str, Any]:
    """In this process: per repeat, the median step time (ms) of each form and their ratio."""
    import crosstrain as ct
    import numpy as np

    registry = ct.get_registry()
    for cls in (ArrayRMSNorm, NativeRMSNorm):
        if cls.model_fields["type"].default not in registry.layers:
            registry.layers.add(cls)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS, 64)).astype(np.float32)
    y = rng.integers(0, 10, BATCH * STEPS)
    rows = []
    for repeat in range(repeats):
        order = ("ArrayRMSNorm", "NativeRMSNorm")[:: 1 if repeat % 2 == 0 else -1]
        step_ms = {}
        for layer_type in order:
            timer = EpochTimer()
            ct.fit(spec(layer_type), backend=backend, data=(x, y), callbacks=[timer], run_dir=False)
            step_ms[layer_type] = 1000 * min(timer.seconds[1:]) / STEPS
        rows.append(step_ms)
    ratios = [r["ArrayRMSNorm"] / r["NativeRMSNorm"] for r in rows]
    return {
        "backend": backend,
        "array_ms": min(r["ArrayRMSNorm"] for r in rows),
        "native_ms": min(r["NativeRMSNorm"] for r in rows),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }


def run(backend: str, repeats: int, threads: int) -> dict[str, Any]:
    """`measure` in a fresh process (one framework, `threads` intra-op threads)."""
    env = {**os.environ, **thread_env(threads)}
    if backend.startswith("keras:"):
        engine = backend.partition(":")[2]
        env.update(KERAS_BACKEND=engine, CROSSTRAIN_KERAS_ENGINE=engine, TF_CPP_MIN_LOG_LEVEL="2")
    code = (
        "import json, sys; from benchmarks.layer_forms import measure; "
        "print('RESULT', json.dumps(measure(sys.argv[1], int(sys.argv[2]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, backend, str(repeats)],
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


def table(results: list[dict[str, Any]], threads: int) -> str:
    lines = [
        f"Train step of a 64-256-RMSNorm-ReLU-256-RMSNorm-ReLU-10 MLP, batch {BATCH}, CPU, "
        f"{threads} intra-op thread(s); fastest epoch per form; ratio: median over repeats "
        "(range in brackets).",
        "",
        "| backend | array-API layer (ms/step) | native classes (ms/step) | array / native |",
        "|---|---|---|---|",
    ]
    for r in results:
        low, high = r["ratio_range"]
        lines.append(
            f"| {r['backend']} | {r['array_ms']:.3f} | {r['native_ms']:.3f} | "
            f"{r['ratio']:.3f} [{low:.3f}–{high:.3f}] |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,jax,keras:jax")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="the markdown file to write")
    args = parser.parse_args(argv)
    results = [run(b, args.repeats, args.threads) for b in args.backends.split(",")]
    text = table(results, args.threads)
    print(text, end="")
    out = args.out or ROOT / "benchmarks" / "results" / f"layer-forms-{datetime.date.today()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Array-API layer vs native classes\n\n{text}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
