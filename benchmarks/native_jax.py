"""Hand-written JAX for the benchmark tasks: flax nnx modules, `jax.jit` + optax over the
split nnx state (parameters, the rest), donated buffers, numpy batches gathered with `x[rows]`,
the loss read every `PULL_EVERY` steps."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .tasks import DIM, HEADS, PULL_EVERY, VOCAB, Task

_List = getattr(nnx, "List", list)


class _MLP(nnx.Module):
    def __init__(self, sizes: list[int], rngs: nnx.Rngs):
        self.layers = _List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


class _CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, (3, 3), padding="SAME", rngs=rngs)
        self.norm = nnx.BatchNorm(16, momentum=0.9, epsilon=1e-3, rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), padding="SAME", rngs=rngs)
        self.head = nnx.Linear(32 * 4 * 4, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = nnx.max_pool(nnx.relu(self.norm(self.conv1(x))), (2, 2), strides=(2, 2))
        h = nnx.relu(self.conv2(h))
        return self.head(h.reshape(h.shape[0], -1))


class _Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, DIM, rngs=rngs)
        self.norm1 = nnx.LayerNorm(DIM, epsilon=1e-3, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(HEADS, DIM, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(DIM, epsilon=1e-3, rngs=rngs)
        self.up = nnx.Linear(DIM, 2 * DIM, rngs=rngs)
        self.down = nnx.Linear(2 * DIM, DIM, rngs=rngs)
        self.head = nnx.Linear(DIM, 10, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = self.embed(tokens)
        h = h + self.attention(self.norm1(h))
        h = h + self.down(nnx.gelu(self.up(self.norm2(h)), approximate=False))
        return self.head(h.mean(axis=1))


def make_model(task: Task) -> nnx.Module:
    """The task's model as idiomatic flax nnx (channels-last)."""
    rngs = nnx.Rngs(0)
    if task.key == "D":
        return _Block(rngs)
    if task.key == "C":
        return _CNN(rngs)
    sizes = [task.input_shape[0]] + [layer["units"] for layer in task.layers if "units" in layer]
    return _MLP(sizes, rngs)


def run_native(task: Task) -> dict[str, Any]:
    """The jitted loop; returns `epoch_s`, `epoch_cpu_s`, `ttfs_s` and `final_loss`."""
    x, y = task.data()
    start = time.perf_counter()
    graphdef, params, rest = nnx.split(make_model(task), nnx.Param, ...)
    tx = optax.adam(task.lr)
    opt_state = tx.init(params)

    def step(params: Any, rest: Any, opt_state: Any, xb: jax.Array, yb: jax.Array) -> Any:
        def loss_fn(p: Any) -> Any:
            model = nnx.merge(graphdef, p, rest, copy=True)
            logits = model(xb)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, nnx.split(model, nnx.Param, ...)[2]

        (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_rest, opt_state, loss

    jitted = jax.jit(step, donate_argnums=(0, 1, 2))
    rng = np.random.default_rng(0)
    epochs, cpu, ttfs, last = [], [], None, float("nan")
    for _ in range(task.epochs):
        began, began_cpu, pending = time.perf_counter(), time.process_time(), []
        order = rng.permutation(len(x))
        for i in range(task.steps_per_epoch):
            rows = order[i * task.batch : (i + 1) * task.batch]
            params, rest, opt_state, loss = jitted(params, rest, opt_state, x[rows], y[rows])
            pending.append(loss)
            if ttfs is None:
                float(loss)
                ttfs = time.perf_counter() - start
            if len(pending) == PULL_EVERY:
                last, pending = float(jnp.mean(jnp.stack(pending))), []
        if pending:
            last = float(jnp.mean(jnp.stack(pending)))
        epochs.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return {"epoch_s": epochs, "epoch_cpu_s": cpu, "ttfs_s": ttfs, "final_loss": last}
