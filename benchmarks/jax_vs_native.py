"""crosstrain's JAX backend against a hand-written `jax.jit` + optax loop, in one process.

Both sides train the same MLP (Adam, softmax cross-entropy) on the same numpy data in the same
seeded batch order, gather each batch with `x[rows]` on the host and pull the loss every 50
steps. Variants:

- `native`: `jax.jit(step, donate_argnums=(0, 1))` over a params dict, one call per batch,
  traced with `jax.default_matmul_precision("highest")` like crosstrain's precision `32` (true
  float32 on GPU/TPU rather than TF32; the same code on CPU);
- `program`: `crosstrain.build(spec, backend="jax")` and the same loop over `train_step`;
- `fit`: `crosstrain.fit` (the whole trainer: hooks, metric pulls, history);
- `fit K=10`: `crosstrain.fit` with `trainer.steps_per_execution: 10` (10 steps per `lax.scan`).

Machines drift (other processes, clocks), so every timed epoch of a variant is paired with a
native epoch run right after it (for `fit`, from its `on_epoch_end` hook, outside the timed
span). The ratio is the median over those pairs; the µs/step columns are each side's best
epoch. Compiling epochs are not timed.

Run: `python -m benchmarks.jax_vs_native` (add `--quick` for a short check). Writes the table
to stdout, `benchmarks/results/jax.md` and `benchmarks/results/jax.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import crosstrain as ct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from crosstrain.data.arrays import epoch_order
from crosstrain.nn.model import init_params

from .paired import fit_pairs, mlp_data

RESULTS = Path(__file__).resolve().parent / "results"
PULL_EVERY = 50
CONFIGS = {
    "small": {"sizes": (64, 128, 128, 10), "batch": 32, "steps_per_epoch": 300},
    "large": {"sizes": (784, 1024, 1024, 10), "batch": 256, "steps_per_epoch": 30},
}


def make_spec(sizes: tuple[int, ...], batch: int, epochs: int, k: int = 1) -> ct.Spec:
    """The benchmark MLP as a spec (no metrics, no files, no progress bar)."""
    layers: list[dict[str, Any]] = []
    for units in sizes[1:-1]:
        layers += [{"type": "Dense", "units": units}, {"type": "ReLU"}]
    layers.append({"type": "Dense", "units": sizes[-1]})
    trainer = {"max_epochs": epochs, "log_every_n_steps": PULL_EVERY, "steps_per_execution": k}
    trainer.update({"progress": False, "loggers": [], "checkpoint": None})
    return ct.load_spec(
        {
            "name": "bench",
            "seed": 0,
            "data": {"batch_size": batch, "shuffle": True},
            "model": {"input_shape": [sizes[0]], "layers": layers},
            "loss": "cross_entropy",
            "optimizer": {"name": "adam", "lr": 1e-3},
            "trainer": trainer,
        }
    )


class _Loop:
    """Epochs over `x, y` in the trainer's seeded order, each timed."""

    def __init__(self, spec: ct.Spec, x: np.ndarray, y: np.ndarray):
        self.spec, self.x, self.y, self.epoch = spec, x, y, 0
        self.run_epoch()

    def step(self, xb: np.ndarray, yb: np.ndarray) -> Any:
        raise NotImplementedError

    def pull(self, pending: list[Any]) -> None:
        raise NotImplementedError

    def run_epoch(self) -> float:
        start, pending = time.perf_counter(), []
        order = epoch_order(len(self.x), self.spec.seed, self.epoch, True)
        batch = self.spec.data.batch_size
        for i in range(0, len(order), batch):
            rows = order[i : i + batch]
            pending.append(self.step(self.x[rows], self.y[rows]))
            if len(pending) == PULL_EVERY:
                self.pull(pending)
                pending = []
        if pending:
            self.pull(pending)
        self.epoch += 1
        return time.perf_counter() - start


class Native(_Loop):
    """The loop a JAX user writes by hand."""

    def __init__(self, spec: ct.Spec, x: np.ndarray, y: np.ndarray):
        values = init_params(spec.model, spec.seed)
        self.params = {n: jnp.asarray(v) for n, v in values.items()}
        kernels = [n for n in values if n.endswith("/kernel")]
        tx = optax.adam(1e-3)
        self.opt_state = tx.init(self.params)

        def forward(p: dict[str, jax.Array], h: jax.Array) -> jax.Array:
            for i, kernel in enumerate(kernels):
                h = h @ p[kernel] + p[kernel.replace("kernel", "bias")]
                h = jax.nn.relu(h) if i < len(kernels) - 1 else h
            return h

        def step(p: dict[str, jax.Array], o: Any, xb: jax.Array, yb: jax.Array) -> Any:
            def loss_fn(q: dict[str, jax.Array]) -> jax.Array:
                logits = forward(q, xb)
                return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

            with jax.default_matmul_precision("highest"):
                loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, o = tx.update(grads, o, p)
            return optax.apply_updates(p, updates), o, loss

        self._step = jax.jit(step, donate_argnums=(0, 1))
        super().__init__(spec, x, y)

    def step(self, xb: np.ndarray, yb: np.ndarray) -> Any:
        self.params, self.opt_state, loss = self._step(self.params, self.opt_state, xb, yb)
        return loss

    def pull(self, pending: list[Any]) -> None:
        jax.device_get(pending)


class Program(_Loop):
    """The same loop over a crosstrain Program."""

    def __init__(self, spec: ct.Spec, x: np.ndarray, y: np.ndarray):
        self.program = ct.build(spec, backend="jax")
        super().__init__(spec, x, y)

    def step(self, xb: np.ndarray, yb: np.ndarray) -> Any:
        return self.program.train_step((xb, yb))

    def pull(self, pending: list[Any]) -> None:
        self.program.metrics_to_host(pending)


def measure(name: str, config: dict[str, Any], epochs: int) -> dict[str, Any]:
    sizes, batch, steps = config["sizes"], config["batch"], config["steps_per_epoch"]
    x, y = mlp_data(config)
    native = Native(make_spec(sizes, batch, epochs), x, y)
    program = Program(make_spec(sizes, batch, epochs), x, y)
    pairs: dict[str, list[tuple[float, float]]] = {"program": []}
    for _ in range(epochs):
        pairs["program"].append((native.run_epoch(), program.run_epoch()))
    pairs |= fit_pairs(
        native,
        lambda k, timer: ct.fit(
            make_spec(sizes, batch, epochs + 1, k),
            backend="jax",
            data=(x, y),
            run_dir=False,
            callbacks=[timer],
        ),
    )
    native_best = min(n for runs in pairs.values() for n, _ in runs)
    return {
        "config": name,
        "mlp": "-".join(map(str, sizes)),
        "batch": batch,
        "steps_per_epoch": steps,
        "us_per_step": {"native": native_best / steps * 1e6}
        | {v: min(t for _, t in runs) / steps * 1e6 for v, runs in pairs.items()},
        "ratio_to_native": {
            v: float(np.median([t / n for n, t in runs])) for v, runs in pairs.items()
        },
        "pairs": {v: runs for v, runs in pairs.items()},
    }


def table(rows: list[dict[str, Any]], device: str) -> str:
    """A markdown table: best µs/step of each variant and the median paired ratio to native."""
    variants = list(rows[0]["ratio_to_native"])
    head = (
        "| model | batch | native µs/step | "
        + " | ".join(f"{v} µs/step (÷ native)" for v in variants)
        + " |"
    )
    lines = [
        f"JAX backend vs hand-written jax.jit + optax, {device}",
        "",
        head,
        "|---" * (3 + len(variants)) + "|",
    ]
    for r in rows:
        cells = " | ".join(
            f"{r['us_per_step'][v]:.1f} ({r['ratio_to_native'][v]:.3f})" for v in variants
        )
        lines.append(f"| {r['mlp']} | {r['batch']} | {r['us_per_step']['native']:.1f} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs")
    parser.add_argument("--only", choices=sorted(CONFIGS), help="run one configuration")
    args = parser.parse_args()
    epochs = 3 if args.quick else 12
    first = jax.devices()[0]
    device = f"{first.platform} ({first.device_kind}, {platform.machine()}, jax {jax.__version__})"
    rows = [
        measure(name, cfg, epochs) for name, cfg in CONFIGS.items() if args.only in (None, name)
    ]
    text = table(rows, device)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "jax.md").write_text(text + "\n", encoding="utf-8")
    meta = {"device": device, "epochs": epochs}
    (RESULTS / "jax.json").write_text(
        json.dumps({**meta, "rows": rows}, indent=1) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
