"""A ~10M-parameter GPT (issue 23): crosstrain's torch and jax backends against a hand-written
nanoGPT-style loop per framework, on the same batches of the same character corpus.

The model is nanoGPT's shape: token and learned position embeddings, `LAYERS` pre-norm blocks
(LayerNorm, causal self-attention on the framework's fused kernel — torch's
`F.scaled_dot_product_attention`, `jax.nn.dot_product_attention` — LayerNorm, a 4x GELU(tanh)
MLP), a final LayerNorm and a linear head; d=384, 6 heads of 64, sequence 256, ~10.7M
parameters; AdamW (lr 1e-3, weight decay 0.1 on every parameter, as crosstrain's `adamw`).
The corpus is this repository's `docs/**/*.md` as characters (vocabulary padded to `VOCAB`);
the batches are `batch` seeded random windows per step, the same arrays on every side.

Sides (`--backends`, each in a fresh process with `--threads` intra-op threads):

- `torch`: crosstrain `backend="torch"` vs the native eager loop (fused qkv `nn.Linear`,
  `torch.optim.AdamW(foreach=True)`);
- `torch-compile`: crosstrain `trainer.compile: true` vs `torch.compile(model)` in the native loop;
- `jax`: crosstrain `backend="jax"` vs a flax nnx model, `jax.jit` of the loss/grad/optax.adamw
  step over the split state with donated buffers.

Each repeat runs both sides of a backend, alternating which goes first, for `--epochs` epochs
of `--steps` steps; the first epoch (compilation, warm-up) is not timed and a side's step time in
a repeat is its fastest other epoch. The table gives the fastest ms/step of each side, tokens/s
from it, and the median (range) over repeats of crosstrain ÷ native.

    python -m benchmarks.gpt [--backends torch,jax] [--steps 8] [--repeats 2] [--batch 2]

writes `benchmarks/results/gpt-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .harness import ROOT, thread_env

LAYERS, DIM, HEADS, SEQ, VOCAB = 6, 384, 6, 256, 128
LR, DECAY = 1e-3, 0.1
EPS = 1e-5


def corpus_tokens() -> tuple[np.ndarray, int]:
    """The characters of docs/**/*.md as ids (sorted vocabulary), and the vocabulary's size."""
    text = "".join(p.read_text("utf-8") for p in sorted((ROOT / "docs").glob("**/*.md")))
    chars = sorted(set(text))
    if len(chars) > VOCAB:  # rare characters share the last id
        chars = chars[: VOCAB - 1]
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index.get(c, VOCAB - 1) for c in text], np.int64)
    return ids, len(chars)


def batches(batch: int, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`steps * batch` seeded windows of SEQ tokens and their next-token targets."""
    tokens, _ = corpus_tokens()
    starts = np.random.default_rng(seed).integers(0, len(tokens) - SEQ - 1, steps * batch)
    x = np.stack([tokens[s : s + SEQ] for s in starts])
    y = np.stack([tokens[s + 1 : s + SEQ + 1] for s in starts])
    return x, y


def spec(batch: int, epochs: int, compile: bool = False) -> dict[str, Any]:
    """The crosstrain spec of the GPT (examples/char_gpt.yaml at nanoGPT's size)."""
    block = {
        "type": "Residual",
        "layers": [
            {"type": "LayerNorm", "epsilon": EPS},
            {"type": "MultiHeadSelfAttention", "num_heads": HEADS, "head_dim": DIM // HEADS,
             "causal": True},
        ],
    }  # fmt: skip
    mlp = {
        "type": "Residual",
        "layers": [
            {"type": "LayerNorm", "epsilon": EPS},
            {"type": "Dense", "units": 4 * DIM},
            {"type": "GELU", "approximate": True},
            {"type": "Dense", "units": DIM},
        ],
    }
    return {
        "name": "gpt-bench",
        "seed": 0,
        "model": {
            "input_shape": [SEQ],
            "layers": [
                {"type": "Embedding", "vocab_size": VOCAB, "dim": DIM},
                {
                    "type": "Residual",
                    "layers": [{"type": "PositionEmbedding", "sequence_length": SEQ}],
                },
                *([block, mlp] * LAYERS),
                {"type": "LayerNorm", "epsilon": EPS},
                {"type": "Dense", "units": VOCAB},
            ],
        },  # fmt: skip
        "data": {"batch_size": batch, "shuffle": False},
        "loss": "cross_entropy",
        "optimizer": {"name": "adamw", "lr": LR, "weight_decay": DECAY},
        "trainer": {
            "max_epochs": epochs,
            "progress": False,
            "loggers": [],
            "log_every_n_steps": 10**6,
            "compile": compile,
        },
    }


def crosstrain_epochs(backend: str, batch: int, steps: int, epochs: int) -> list[float]:
    """Seconds of each training epoch of crosstrain's fit."""
    import crosstrain as ct

    from .spec_variants import EpochTimer

    x, y = batches(batch, steps)
    timer = EpochTimer()
    framework = "torch" if backend.startswith("torch") else backend
    ct.fit(spec(batch, epochs, backend == "torch-compile"), backend=framework, data=(x, y),
           callbacks=[timer], run_dir=False)  # fmt: skip
    return timer.seconds


def torch_epochs(batch: int, steps: int, epochs: int, compile: bool) -> list[float]:
    """nanoGPT's model and loop in plain torch; seconds of each epoch (loss read at its end)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(DIM, eps=EPS), nn.LayerNorm(DIM, eps=EPS)
            self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
            self.fc, self.out = nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(DIM, dim=2)
            q, k, v = (a.view(b, t, HEADS, DIM // HEADS).transpose(1, 2) for a in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, DIM))
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(VOCAB, DIM), nn.Embedding(SEQ, DIM)
            self.blocks = nn.ModuleList([Block() for _ in range(LAYERS)])
            self.ln_f, self.head = nn.LayerNorm(DIM, eps=EPS), nn.Linear(DIM, VOCAB)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            h = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                h = block(h)
            return self.head(self.ln_f(h))

    torch.manual_seed(0)
    model = GPT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=DECAY, foreach=True)
    forward = torch.compile(model) if compile else model
    x, y = (torch.from_numpy(a) for a in batches(batch, steps))
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(steps):
            xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
            logits = forward(xb)
            loss = F.cross_entropy(logits.view(-1, VOCAB), yb.view(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()
        seconds.append(time.perf_counter() - start)
    return seconds


def jax_epochs(batch: int, steps: int, epochs: int) -> list[float]:
    """The same GPT as flax nnx modules, one `jax.jit` step with optax.adamw and donated state."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    listed = getattr(nnx, "List", list)

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.ln1 = nnx.LayerNorm(DIM, epsilon=EPS, rngs=rngs)
            self.ln2 = nnx.LayerNorm(DIM, epsilon=EPS, rngs=rngs)
            self.qkv, self.proj = (
                nnx.Linear(DIM, 3 * DIM, rngs=rngs),
                nnx.Linear(DIM, DIM, rngs=rngs),
            )
            self.fc = nnx.Linear(DIM, 4 * DIM, rngs=rngs)
            self.out = nnx.Linear(4 * DIM, DIM, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            b, t, _ = x.shape
            qkv = self.qkv(self.ln1(x)).reshape(b, t, 3, HEADS, DIM // HEADS)
            a = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2],
                                             is_causal=True)  # fmt: skip
            x = x + self.proj(a.reshape(b, t, DIM))
            return x + self.out(jax.nn.gelu(self.fc(self.ln2(x)), approximate=True))

    class GPT(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.wte = nnx.Embed(VOCAB, DIM, rngs=rngs)
            self.wpe = nnx.Embed(SEQ, DIM, rngs=rngs)
            self.blocks = listed([Block(rngs) for _ in range(LAYERS)])
            self.ln_f = nnx.LayerNorm(DIM, epsilon=EPS, rngs=rngs)
            self.head = nnx.Linear(DIM, VOCAB, rngs=rngs)

        def __call__(self, idx: jax.Array) -> jax.Array:
            h = self.wte(idx) + self.wpe(jnp.arange(idx.shape[1]))
            for block in self.blocks:
                h = block(h)
            return self.head(self.ln_f(h))

    graphdef, params = nnx.split(GPT(nnx.Rngs(0)), nnx.Param)
    tx = optax.adamw(LR, weight_decay=DECAY)
    opt_state = tx.init(params)

    def loss_fn(p: Any, xb: jax.Array, yb: jax.Array) -> jax.Array:
        logits = nnx.merge(graphdef, p)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(p: Any, s: Any, xb: jax.Array, yb: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    x, y = batches(batch, steps)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(steps):
            rows = slice(i * batch, (i + 1) * batch)
            params, opt_state, loss = step(params, opt_state, x[rows], y[rows])
        float(loss)
        seconds.append(time.perf_counter() - start)
    return seconds


def native_epochs(backend: str, batch: int, steps: int, epochs: int) -> list[float]:
    if backend == "jax":
        return jax_epochs(batch, steps, epochs)
    return torch_epochs(batch, steps, epochs, compile=backend == "torch-compile")


def parameter_count() -> int:
    per_block = 4 * DIM + (3 * DIM * DIM + 3 * DIM) + (DIM * DIM + DIM) + 8 * DIM * DIM + 5 * DIM
    return VOCAB * DIM + SEQ * DIM + LAYERS * per_block + 2 * DIM + DIM * VOCAB + VOCAB


def measure(backend: str, batch: int, steps: int, epochs: int, repeats: int) -> dict[str, Any]:
    """In this process: per repeat, each side's fastest timed epoch, sides alternating."""
    rows, compile_s = [], {}
    for repeat in range(repeats):
        order = ("crosstrain", "native") if repeat % 2 == 0 else ("native", "crosstrain")
        ms = {}
        for side in order:
            run = crosstrain_epochs if side == "crosstrain" else native_epochs
            seconds = run(backend, batch, steps, epochs)
            ms[side] = 1000 * min(seconds[1:]) / steps
            compile_s.setdefault(side, seconds[0] - min(seconds[1:]))
        rows.append(ms)
    ratios = [r["crosstrain"] / r["native"] for r in rows]
    best = {side: min(r[side] for r in rows) for side in ("crosstrain", "native")}
    return {
        "backend": backend,
        "crosstrain_ms": best["crosstrain"],
        "native_ms": best["native"],
        "crosstrain_tokens_s": batch * SEQ * 1000 / best["crosstrain"],
        "native_tokens_s": batch * SEQ * 1000 / best["native"],
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "first_epoch_extra_s": compile_s,
        "repeats": rows,
    }


def worker(backend: str, batch: int, steps: int, epochs: int, repeats: int) -> None:
    print("RESULT", json.dumps(measure(backend, batch, steps, epochs, repeats)))


def run(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """`measure` in a fresh process; a failure (e.g. torch.compile without a compiler) is
    reported as the row's `skipped` reason."""
    env = {**os.environ, **thread_env(args.threads)}
    code = "import sys; from benchmarks.gpt import worker; worker(sys.argv[1], *map(int, sys.argv[2:]))"
    argv = [backend, args.batch, args.steps, args.epochs, args.repeats]
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *map(str, argv)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired:
        return {"backend": backend, "skipped": f"did not finish in {args.timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"backend": backend, "skipped": f"failed: {last[:300]}"}
    return json.loads(lines[-1][len("RESULT ") :])


def table(results: list[dict[str, Any]], args: argparse.Namespace, header: str) -> str:
    lines = [
        header,
        "",
        "| backend | crosstrain ms/step | native ms/step | crosstrain tokens/s | "
        "native tokens/s | crosstrain ÷ native |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['backend']} | skipped: {r['skipped']} | | | | |")
            continue
        low, high = r["ratio_range"]
        lines.append(
            f"| {r['backend']} | {r['crosstrain_ms']:.1f} | {r['native_ms']:.1f} | "
            f"{r['crosstrain_tokens_s']:.0f} | {r['native_tokens_s']:.0f} | "
            f"{r['ratio']:.3f} [{low:.3f}–{high:.3f}] |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,torch-compile,jax")
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per side (first untimed)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per backend")
    parser.add_argument("--note", default="", help="a line for the header (e.g. machine load)")
    parser.add_argument("--out", type=Path, default=None, help="file stem to write .json/.md")
    args = parser.parse_args(argv)
    results = [run(b, args) for b in args.backends.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (
        f"GPT train step: {LAYERS} layers, d={DIM}, {HEADS} heads, sequence {SEQ}, vocab {VOCAB}, "
        f"{parameter_count() / 1e6:.1f}M parameters, batch {args.batch} ({args.batch * SEQ} "
        f"tokens/step), fp32 on CPU ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {args.threads} intra-op threads); {args.steps} steps/epoch, "
        f"{args.epochs} epochs per side (first untimed), {args.repeats} repeat(s), sides "
        f"alternating; fastest epoch per side; ratio: median (range) over repeats. "
        f"Load average at the end: {load:.1f}. {args.note}"
    ).strip()
    text = table(results, args, header)
    print(text, end="")
    stem = args.out or ROOT / "benchmarks" / "results" / f"gpt-{datetime.date.today()}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.gpt " + shlex.join(sys.argv[1:] if argv is None else argv)
    Path(f"{stem}.md").write_text(
        f"# GPT (~10M parameters): crosstrain vs nanoGPT-style native loops\n\n"
        f"`{command}`\n\n{text}"
    )
    Path(f"{stem}.json").write_text(
        json.dumps({"command": command, "header": header, "results": results}, indent=1)
    )
    print(f"wrote {stem}.md and {stem}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
