"""Runs one benchmark configuration in this process and prints one JSON line.

`python -m benchmarks.worker '{"task": "A", "runner": "crosstrain:torch", "steps": 2000}'`

Runners: `crosstrain:<backend>` (`torch`, `jax`, `keras:<engine>`), `native:torch`,
`native:jax`, `native:keras:<engine>` (Keras `model.fit`), `lightning:defaults`,
`lightning:lean`. The framework is imported before the clock starts, so time to first step is
build + compile + one step, for every runner alike. Each epoch is timed in wall time and in
process CPU time (steadier when other processes compete for the cores). Peak RSS is the
process's `ru_maxrss`.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import sys
import time
from typing import Any

from .tasks import TASKS, Task


def framework_of(runner: str) -> str:
    """The framework a runner needs: `torch`, `jax` or `keras:<engine>`."""
    parts = runner.split(":")
    if parts[0] == "lightning":
        return "torch"
    return ":".join(parts[1:])


def import_framework(framework: str) -> None:
    """Imports the framework (and picks the Keras engine) before anything is timed."""
    if framework.startswith("keras"):
        os.environ["KERAS_BACKEND"] = framework.split(":")[1] if ":" in framework else "tensorflow"
        import keras  # noqa: F401
    elif framework == "jax":
        import flax.nnx  # noqa: F401
        import optax  # noqa: F401
    else:
        import torch  # noqa: F401


def run_crosstrain(task: Task, backend: str) -> dict[str, Any]:
    """`crosstrain.fit` of the task's spec; the first step is timed on a separate `build`."""
    import crosstrain as ct

    spec = ct.load_spec(task.spec())
    x, y = task.data()
    start = time.perf_counter()
    program = ct.build(spec, backend=backend, total_steps=task.steps)
    program.metrics_to_host([program.train_step((x[: task.batch], y[: task.batch]))])
    ttfs = time.perf_counter() - start
    del program
    gc.collect()

    class Timer(ct.Callback):
        def __init__(self) -> None:
            self.epochs: list[float] = []
            self.cpu: list[float] = []
            self.began = self.began_cpu = 0.0

        @ct.hookimpl
        def on_epoch_start(self, stage: str) -> None:
            if stage == "train":
                self.began, self.began_cpu = time.perf_counter(), time.process_time()

        @ct.hookimpl
        def on_epoch_end(self, stage: str) -> None:
            if stage == "train":
                self.epochs.append(time.perf_counter() - self.began)
                self.cpu.append(time.process_time() - self.began_cpu)

    timer = Timer()
    result = ct.fit(spec, backend=backend, data=(x, y), run_dir=False, callbacks=[timer])
    return {
        "epoch_s": timer.epochs,
        "epoch_cpu_s": timer.cpu,
        "ttfs_s": ttfs,
        "final_loss": result.metrics["train_loss"],
    }


def per_step(epochs: list[float], steps: int) -> float:
    """µs per step: the median epoch after the first (warm-up), over its steps."""
    timed = epochs[1:] or epochs
    return 1e6 * statistics.median(timed) / steps


def run(config: dict[str, Any]) -> dict[str, Any]:
    """Measures one configuration: `task`, `runner`, optional `steps` and `epochs`."""
    task = TASKS[config["task"]].sized(config.get("steps"), config.get("epochs"))
    runner = config["runner"]
    import_framework(framework_of(runner))
    kind, _, backend = runner.partition(":")
    if kind == "crosstrain":
        out = run_crosstrain(task, backend)
    elif kind == "lightning":
        from .native_torch import run_lightning

        out = run_lightning(task, lean=backend == "lean")
    elif backend == "torch":
        from .native_torch import run_native

        out = run_native(task)
    elif backend == "jax":
        from .native_jax import run_native

        out = run_native(task)
    elif backend.startswith("keras"):
        from .native_keras import run_native

        out = run_native(task)
    else:
        raise ValueError(f"unknown runner {runner!r}")
    return {
        **config,
        **out,
        "us_per_step": per_step(out["epoch_s"], task.steps_per_epoch),
        "cpu_us_per_step": per_step(out["epoch_cpu_s"], task.steps_per_epoch),
        "steps_per_epoch": task.steps_per_epoch,
        "epochs": task.epochs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)


if __name__ == "__main__":
    main()
