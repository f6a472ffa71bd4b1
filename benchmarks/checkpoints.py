"""Checkpoint write and read against safetensors and torch.save on the same tensors.

`python -m benchmarks.checkpoints [--params 50] [--repeats 3]` builds an MLP-shaped state of
`--params` million float32 parameters plus both Adam slots (~12 bytes a parameter), and times
each side's save and load in a fresh process (so the peak RSS is that operation's own): process
CPU time, wall time and the peak RSS above the process's RSS just before the operation (the
state itself already allocated). Sides: `crosstrain` (`write_checkpoint` / `read_checkpoint`,
hashed, verified), `crosstrain:torch` (a torch program's own save path: `get_state` of live
torch tensors, then the write), `safetensors` (`safetensors.numpy.save_file` / `load_file`, one
file per part, no hash) and `torch.save` / `torch.load` of the same tensors. Results go to
`benchmarks/results/checkpoints-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("crosstrain", "crosstrain:torch", "safetensors", "torch.save")


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> float:
    """Resets the process's peak RSS (Linux `clear_refs` 5) and returns the RSS now (MB)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")
    return _status_mb("VmRSS")


def _sizes(million: int) -> list[tuple[int, int]]:
    """Square-ish Dense layers that add up to about `million` million parameters."""
    width = int((million * 1e6 / 4) ** 0.5)
    return [(width, width)] * 4


def _state(million: int) -> Any:
    from crosstrain.checkpoint.format import CanonicalState

    rng = np.random.default_rng(0)
    params, slots = {}, {}
    for i, (fan_in, fan_out) in enumerate(_sizes(million)):
        for name, shape in (("kernel", (fan_in, fan_out)), ("bias", (fan_out,))):
            key = f"dense_{i}/{name}"
            params[key] = rng.standard_normal(shape, dtype=np.float32)
            slots[f"m/{key}"] = rng.standard_normal(shape, dtype=np.float32)
            slots[f"v/{key}"] = np.abs(rng.standard_normal(shape, dtype=np.float32))
    return CanonicalState(params, slots, step=10)


def _torch_program(million: int) -> Any:
    import crosstrain as ct

    sizes = _sizes(million)
    spec = {
        "model": {
            "input_shape": [sizes[0][0]],
            "layers": [{"type": "Dense", "units": out} for _, out in sizes],
        },
        "loss": "mse",
        "optimizer": {"name": "adam", "lr": 1e-3},
        "trainer": {"progress": False, "loggers": [], "checkpoint": None},
    }
    program = ct.build(spec, backend="torch")
    program.set_state(_state(million))  # Adam slots present, as after training
    return program


def run_one(side: str, op: str, million: int, where: Path) -> dict[str, Any]:
    """One save or load in this process; CPU s, wall s, extra peak RSS MB, bytes on disk."""
    from crosstrain.checkpoint.format import read_checkpoint

    program = _torch_program(million) if side == "crosstrain:torch" else None
    state = _state(million) if program is None else None
    if op == "load":  # write first (untimed), then measure the load in this process
        run_save(side, state, program, where)
        state = program = None
    import gc

    if side == "torch.save":
        import torch  # noqa: F401  (imported before the clock, like the other sides' modules)
    gc.collect()
    rss, cpu, wall = _reset_peak(), time.process_time(), time.perf_counter()
    if op == "save":
        run_save(side, state, program, where)
    elif side.startswith("crosstrain"):
        read_checkpoint(where / "step-10")
    elif side == "safetensors":
        from safetensors.numpy import load_file

        [load_file(str(where / f"{part}.safetensors")) for part in ("model", "optimizer")]
    else:
        import torch

        torch.load(where / "state.pt", weights_only=True)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    size = sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
    return {"cpu_s": cpu, "wall_s": wall, "extra_rss_mb": _status_mb("VmHWM") - rss, "bytes": size}


def run_save(side: str, state: Any, program: Any, where: Path) -> None:
    from crosstrain.checkpoint.format import write_checkpoint

    if side == "crosstrain":
        write_checkpoint(where, state, {})
    elif side == "crosstrain:torch":
        write = getattr(program, "state_for_write", program.get_state)  # before: no views
        write_checkpoint(where, write(), {})
    elif side == "safetensors":
        from safetensors.numpy import save_file

        save_file(state.params, str(where / "model.safetensors"))
        save_file(state.optimizer, str(where / "optimizer.safetensors"))
    else:
        import torch

        tensors = {k: torch.from_numpy(v) for k, v in {**state.params, **state.optimizer}.items()}
        torch.save(tensors, where / "state.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=50, help="million parameters")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--name", default=f"checkpoints-{time.strftime('%Y-%m-%d')}")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        side, op, where = json.loads(args.one)
        print(json.dumps(run_one(side, op, args.params, Path(where))))
        return
    runs: list[dict[str, Any]] = []
    sides = args.sides.split(",")
    for repeat in range(args.repeats):
        for side in sides[repeat % len(sides) :] + sides[: repeat % len(sides)]:
            for op in ("save", "load"):
                where = Path(tempfile.mkdtemp(prefix="ct-bench-ckpt-"))
                try:
                    done = subprocess.run(
                        [sys.executable, "-m", "benchmarks.checkpoints", "--params",
                         str(args.params), "--one", json.dumps([side, op, str(where)])],
                        capture_output=True, text=True, check=True,
                        cwd=Path(__file__).resolve().parent.parent,
                    )  # fmt: skip
                finally:
                    shutil.rmtree(where, ignore_errors=True)
                run = {"side": side, "op": op, "repeat": repeat}
                run.update(json.loads(done.stdout.strip().splitlines()[-1]))
                runs.append(run)
                print(run, flush=True)
    rows = []
    for side in sides:
        for op in ("save", "load"):
            mine = [r for r in runs if r["side"] == side and r["op"] == op]
            base = [r for r in runs if r["side"] == "safetensors" and r["op"] == op]
            row = {"side": side, "op": op, "bytes": mine[0]["bytes"]}
            for key in ("cpu_s", "wall_s", "extra_rss_mb"):
                row[key] = statistics.median(r[key] for r in mine)
            if base:
                row["cpu_vs_safetensors"] = row["cpu_s"] / statistics.median(
                    r["cpu_s"] for r in base
                )
            row["extra_rss_share"] = row["extra_rss_mb"] * 2**20 / row["bytes"]
            rows.append(row)
    out = {"params_million": args.params, "repeats": args.repeats, "rows": rows, "runs": runs}
    out["command"] = "python -m benchmarks.checkpoints " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    lines = [
        f"# Checkpoint save/load, {args.params}M float32 parameters + Adam, {time.strftime('%Y-%m-%d')}",
        "",
        f"`{out['command']}`; medians of {args.repeats} repeats, each operation in a fresh "
        "process. The machine (2 cores) was shared with other jobs: CPU seconds are steadier "
        "than wall seconds. Extra RSS = peak RSS during the operation minus RSS before it.",
        "",
        "| side | op | MB on disk | CPU s | ÷ safetensors (CPU) | wall s | extra peak RSS MB "
        "| extra ÷ size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row['cpu_vs_safetensors']:.2f}" if "cpu_vs_safetensors" in row else "—"
        lines.append(
            f"| {row['side']} | {row['op']} | {row['bytes'] / 2**20:.0f} | {row['cpu_s']:.2f} | "
            f"{ratio} | {row['wall_s']:.2f} | {row['extra_rss_mb']:.0f} | "
            f"{row['extra_rss_share']:.0%} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{args.name}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
