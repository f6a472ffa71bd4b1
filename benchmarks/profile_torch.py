"""cProfile of crosstrain's torch backend and the hand-written torch loop on one task.

`python -m benchmarks.profile_torch [--task A] [--top 25]` runs each side once to warm up, then
once under cProfile, and prints the functions with the most own time. Compare the two lists:
what crosstrain calls that the native loop does not is its overhead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

from .native_torch import run_native
from .tasks import TASKS
from .worker import per_step, run_crosstrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="A", choices=sorted(TASKS))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    task = TASKS[args.task]
    for name, fn in (
        ("native:torch", lambda: run_native(task)),
        ("crosstrain:torch", lambda: run_crosstrain(task, "torch")),
    ):
        fn()
        profile = cProfile.Profile()
        profile.enable()
        out = fn()
        profile.disable()
        print(f"== {name}: {per_step(out['epoch_cpu_s'], task.steps_per_epoch):.1f} CPU µs/step")
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
