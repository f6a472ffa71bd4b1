"""Helper of the SIGKILL test: a zygote that forks checkpoint writers on request.

Imports `crosstrain.checkpoint.format` once (no framework), then reads commands on stdin:

- `fork ROOT LOG SEED [async]`: forks a writer that cleans leftovers of the previous one,
  continues after the latest checkpoint and writes checkpoints in a loop (every fourth one
  rewrites the step it just wrote), keeping the last three. After each save returns it appends
  `saved <step>` to LOG and flushes. With `async` the writes run on the background writer of
  `trainer.checkpoint.async` (`crosstrain.checkpoint.background`) and a save counts as
  returned when the writer reports it committed. Replies `pid <pid>`.
- `wait PID`: reaps that child (the test killed it with SIGKILL). Replies `status <status>`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from crosstrain.checkpoint.background import BackgroundWriter, host_copy
from crosstrain.checkpoint.format import (
    CanonicalState,
    clean_temporary,
    latest_checkpoint,
    list_checkpoints,
    remove_checkpoint,
)
from crosstrain.checkpoint.format import write_checkpoint as write


def state_for(step: int, version: int) -> CanonicalState:
    """A small state whose values say which step and which write of it they are."""
    params = {
        "dense_0/kernel": np.full((64, 48), step, np.float32),
        "dense_0/bias": np.full((48,), version, np.float32),
    }
    optimizer = {"m/dense_0/kernel": np.full((64, 48), -step, np.float32)}
    return CanonicalState(params, optimizer, step, {"torch": np.arange(32, dtype=np.uint8)})


def _prune(root: Path) -> None:
    for old in list_checkpoints(root)[:-3]:
        if old.name.startswith("step-"):
            remove_checkpoint(old)


def writer(root: Path, log: Path, seed: int, background: bool = False) -> None:
    """Writes checkpoints forever (until killed)."""
    threaded = BackgroundWriter() if background else None
    rng = np.random.default_rng(seed)
    removed = clean_temporary(root)
    latest = latest_checkpoint(root)
    step = int(latest.name.rsplit("-", 1)[1]) if latest else 0
    with log.open("a") as out:
        print(f"cleaned {len(removed)}", file=out, flush=True)
        version = 0
        while True:
            rewrite = step > 0 and rng.random() < 0.25
            step = step if rewrite else step + 1
            version += 1
            info = {"epoch": 0, "batch_in_epoch": step}
            if threaded is None:
                write(root, state_for(step, version), info)
                print(f"saved {step}", file=out, flush=True)
                _prune(root)
                continue
            snapshot = host_copy(state_for(step, version))
            done = threaded.submit(lambda s=snapshot, i=info: write(root, s, i))
            if done is not None:  # the previous write, committed before this one started
                print(f"saved {int(done.name.split('-')[1])}", file=out, flush=True)
                _prune(root)


def main() -> None:
    for line in sys.stdin:
        command, *args = line.split()
        if command == "fork":
            pid = os.fork()
            if pid == 0:
                try:
                    writer(Path(args[0]), Path(args[1]), int(args[2]), args[3:] == ["async"])
                finally:
                    os._exit(1)
            print(f"pid {pid}", flush=True)
        elif command == "wait":
            _, status = os.waitpid(int(args[0]), 0)
            print(f"status {status}", flush=True)


if __name__ == "__main__":
    main()
