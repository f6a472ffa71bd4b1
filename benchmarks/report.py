"""The results as a markdown table and a PNG bar chart of the ratios to native."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tasks import TASKS


def _range(spread: dict[str, float], fmt: str) -> str:
    return f"{spread['median']:{fmt}} [{spread['min']:{fmt}}–{spread['max']:{fmt}}]"


def markdown(results: dict[str, Any]) -> str:
    """Tables per task (median [min–max] over repeats) and the start-up numbers."""
    info, settings = results["machine"], results["settings"]
    lines = [
        f"# crosstrain benchmarks, {results['date']} on {info['host']}",
        "",
        f"`{results['command']}`",
        "",
        f"{info['processor']}, {info['cpus']} CPUs, {settings['threads']} intra-op thread(s) per "
        f"framework, {settings['repeats']} interleaved repeats, each configuration in its own "
        f"process. Load average before/after: {info['load_average_before'][0]:.1f} / "
        f"{info['load_average'][0]:.1f}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + ".",
        "",
        "Cells are median [min–max] over repeats. µs/step is the median epoch after the first "
        "(warm-up, compilation) over its steps, in wall time and in process CPU time (steadier "
        "when other processes share the cores); ÷ native = runner ÷ the native loop of the same "
        "framework in the same repeat; a target counts as met (✓) when either median meets it. "
        "First step = build + compile + one step, framework already imported.",
    ]
    for key in settings["tasks"]:
        rows = [r for r in results["rows"] if r["task"] == key]
        if not rows:
            continue
        lines += [
            "",
            f"## {key}: {TASKS[key].title}",
            "",
            "| runner | wall µs/step | ÷ native | CPU µs/step | ÷ native (CPU) | target | "
            "first step s | peak RSS MB (÷ native) | final loss |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            ratio = _range(r["ratio"], ".3f") if r["ratio"] else "—"
            cpu_ratio = _range(r["cpu_ratio"], ".3f") if r["cpu_ratio"] else "—"
            goal = r["target"]
            mark = ""
            if goal and r["ratio"]:
                mark = " ✓" if min(r["ratio"]["median"], r["cpu_ratio"]["median"]) <= goal else " ✗"
            rss = f"{r['peak_rss_mb']['median']:.0f}"
            if r["rss_ratio"]:
                rss += f" ({r['rss_ratio']:.2f})"
            lines.append(
                f"| {r['runner']} | {_range(r['us_per_step'], '.0f')} | {ratio} | "
                f"{_range(r['cpu_us_per_step'], '.0f')} | {cpu_ratio} | "
                f"{f'≤ {goal}{mark}' if goal else ''} | {r['ttfs_s']['median']:.2f} | {rss} | "
                f"{r['final_loss']:.4f} |"
            )
    errors = [run for run in results["runs"] if "error" in run]
    if errors:
        lines += ["", "## Failed runs", ""]
        lines += [
            f"- {e['task']} {e['runner']} (repeat {e['repeat']}): {e['error']}" for e in errors
        ]
    start = results.get("startup")
    if start:
        lines += [
            "",
            "## Start-up",
            "",
            f"- `import crosstrain`: {_range(start['import_s'], '.3f')} s (target ≤ "
            f"{start['import_target_s']} s); frameworks loaded by it: "
            f"{', '.join(start['frameworks_loaded_by_import']) or 'none'}",
            f"- `crosstrain --help`: {_range(start['help_s'], '.3f')} s wall",
        ]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> bool:
    """A bar chart of the median CPU-time ratios (min–max error bars); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in results["rows"] if r["cpu_ratio"]]
    tasks = [t for t in results["settings"]["tasks"] if any(r["task"] == t for r in rows)]
    runners = list(dict.fromkeys(r["runner"] for r in rows))
    width = 0.8 / max(1, len(runners))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(tasks) + 2), 4.5))
    for i, runner in enumerate(runners):
        xs, ys, lo, hi = [], [], [], []
        for j, task in enumerate(tasks):
            row = next((r for r in rows if r["task"] == task and r["runner"] == runner), None)
            if row:
                spread = row["cpu_ratio"]
                xs.append(j + (i - (len(runners) - 1) / 2) * width)
                ys.append(spread["median"])
                lo.append(spread["median"] - spread["min"])
                hi.append(spread["max"] - spread["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=runner)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("CPU time per step ÷ native loop (lower is better)")
    ax.set_title(f"crosstrain benchmarks {results['date']} ({results['machine']['host']})")
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
