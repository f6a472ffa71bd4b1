"""The plan of a fit, in words: what `crosstrain fit --explain` prints before step 1 and what
heads every run's `summary.txt`.

Every line is gathered from the part that owns the fact, never computed a second time: the
run length from `crosstrain.train.run_length` (the value the schedule and the loop use), the
learning rate from `crosstrain.nn.optim.applied_lr`, the hooks from the pluggy
PluginManager (with the fit's callbacks registered), and what only the backend knows
(engine, processes, sharding, compilation) from its optional `Backend.explain`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crosstrain.nn.optim import applied_lr, schedule_length
from crosstrain.train.hook_errors import plugin_label

if TYPE_CHECKING:
    from crosstrain.plugin.protocol import Backend, RunEnv
    from crosstrain.spec.schema import Spec
    from crosstrain.train.run_length import RunLength

LIFECYCLE = (
    "on_fit_start",
    "on_epoch_start",
    "on_batch_end",
    "collect_metrics",
    "on_epoch_end",
    "on_checkpoint",
    "on_exception",
    "on_fit_end",
)
"""The per-fit hooks in the order a fit first reaches them (docs/design.md "Hook order")."""

PRECISION_POLICY = {
    "32": "float32 parameters and math",
    "64": "float64 parameters and math",
    "16-mixed": "float16 compute, float32 parameters, loss scaling",
    "bf16-mixed": "bfloat16 compute, float32 parameters",
    "bf16-true": "bfloat16 parameters and compute",
}


def _lr_line(spec: Spec, total: int | None) -> str:
    opt, schedule = spec.optimizer, spec.schedule
    head = f"{opt.name} lr {opt.lr:g}"
    if schedule is None:
        return f"{head}, constant (no schedule)"
    last = schedule_length(total) - 1
    points = [f"{applied_lr(opt, schedule, 0, total):.4g} at step 0"]
    if schedule.warmup_steps:
        step = schedule.warmup_steps
        points.append(f"{applied_lr(opt, schedule, step, total):.4g} after warmup (step {step})")
    points.append(f"{applied_lr(opt, schedule, last, total):.4g} at step {last}")
    unknown = "" if total else " (run length unknown: the default length)"
    return f"{head}, {schedule.name}: " + ", ".join(points) + unknown


def _length_line(spec: Spec, length: RunLength) -> str:
    per_epoch, total = length.steps_per_epoch, length.total_steps
    epochs = spec.trainer.max_epochs
    if not per_epoch:
        bound = f"at most {total} steps (trainer.max_steps)" if total else "until the data ends"
        return f"steps per epoch unknown until a first pass (a stream), {epochs} epochs, {bound}"
    text = f"{per_epoch} steps per epoch x {epochs} epochs"
    if total is not None and total < per_epoch * epochs:
        return f"{text}, cut to {total} steps by trainer.max_steps"
    return f"{text} = {total} steps"


def _checkpoint_line(spec: Spec, where: str) -> str:
    policy = spec.trainer.checkpoint
    if policy is None:
        return "none (trainer.checkpoint: null)"
    every = "every epoch" if policy.every_n_epochs == 1 else f"every {policy.every_n_epochs} epochs"
    best = ""
    if policy.top_k:
        monitor = policy.monitor or "val_loss (else train_loss)"
        best = f" and the {policy.top_k} best by {monitor}, {policy.mode}"
    writing = "written on a background thread" if policy.async_save else "written at once"
    return (
        f"{every} and on Ctrl-C/SIGTERM, keep the last {policy.keep}{best}, {writing}, into {where}"
    )


def hook_order(pm: Any) -> list[tuple[str, list[str]]]:
    """`(hook, [plugin, ...])` for each lifecycle hook with implementations, plugins in the
    order pluggy calls them (the reverse of registration, `tryfirst`/`trylast` honoured)."""
    found = []
    for name in LIFECYCLE:
        impls = getattr(pm.hook, name).get_hookimpls()
        if impls:
            found.append((name, [plugin_label(pm, impl) for impl in reversed(impls)]))
    return found


def _launcher_line(
    spec: Spec, backend: Backend, launcher: str | None, launched: tuple[int, int, int] | None
) -> str:
    if launched is not None and launched[1] > 1:
        return f"started by a launcher: this is rank {launched[0]} of {launched[1]}"
    if launcher is not None:
        return f"{launcher} (--launcher): starts {spec.trainer.devices} worker processes"
    if spec.trainer.devices > 1 and _own_launch(backend):
        return "the backend's own (Backend.launch)"
    return "none: this process trains"


def _own_launch(backend: Backend) -> bool:
    """Whether the backend starts worker processes itself (overrides `Backend.launch`)."""
    from crosstrain.plugin.protocol import Backend

    return getattr(backend.launch, "__func__", None) is not Backend.launch


def fit_plan(
    spec: Spec,
    backend_name: str,
    backend: Backend,
    env: RunEnv,
    length: RunLength,
    pm: Any,
    *,
    launcher: str | None = None,
    launched: tuple[int, int, int] | None = None,
    checkpoints: str | None = None,
) -> str:
    """The plan of one fit as text (ends with a newline).

    Args:
        spec, backend_name, backend, env: what the fit builds (`env` as `make_env` made it).
        length: the run length (`run_length`), the one the schedule and the loop use.
        pm: the PluginManager with the fit's callbacks registered.
        launcher: the launcher `fit` was asked to use; `launched`: `launcher_environment()`.
        checkpoints: where checkpoints go (default: described from `trainer.run_dir`).
    """
    t = spec.trainer
    version = backend.version() or "version unknown"
    lines: dict[str, str] = {
        "backend": f"{backend_name} ({backend.name.split(':')[0]} {version})",
        "devices": f"{t.devices} (accelerator {t.accelerator}, strategy {t.strategy})",
        "processes": f"{t.devices}, one per device"
        if t.devices > 1 and (launcher or _own_launch(backend))
        else f"1 (this process, {t.devices} device{'s' if t.devices > 1 else ''})",
        "launcher": _launcher_line(spec, backend, launcher, launched),
        "precision": f"{t.precision}: {PRECISION_POLICY.get(t.precision, t.precision)}"
        + (f", float32 matmuls '{t.matmul_precision}'" if t.matmul_precision else ""),
        "execution": ("compiled (trainer.compile)" if t.compile else "eager")
        + (f", {t.steps_per_execution} steps per call" if t.steps_per_execution > 1 else ""),
        "sharding": "none (one device)" if t.devices == 1 else f"strategy {t.strategy}",
        "run length": _length_line(spec, length),
        "lr schedule": _lr_line(spec, length.total_steps),
        "checkpoints": _checkpoint_line(
            spec, checkpoints or f"{t.run_dir}/{spec.name}/<time>/checkpoints"
        ),
    }
    lines.update(backend.explain(spec, env))
    width = max(len(k) for k in lines)
    out = [f'plan of "{spec.name}"']
    out += [f"  {key:<{width}}  {text}" for key, text in lines.items()]
    hooks = hook_order(pm)
    out.append("  hooks, in the order they fire (plugin or callback class, first called first):")
    width = max((len(name) for name, _ in hooks), default=0)
    out += [f"    {name:<{width}}  {', '.join(owners)}" for name, owners in hooks]
    return "\n".join(out) + "\n"
