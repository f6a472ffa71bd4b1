"""The torch profiler for `trainer.profile`: a Chrome trace (open in chrome://tracing or
Perfetto) and the operator table, CUDA kernels included on a GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch


@contextlib.contextmanager
def trace(directory: Path) -> Iterator[None]:
    """Records the block with `torch.profiler`; writes `torch_trace.json` and `torch_ops.txt`."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        yield
    directory.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(directory / "torch_trace.json"))
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    (directory / "torch_ops.txt").write_text(table + "\n", encoding="utf-8")
