"""The contract between core and a backend: Backend, Program, RunEnv (and Capabilities, from
`capabilities.py`).

A backend turns a spec into a Program (native model, optimizer, compiled steps) and converts
its state to and from the canonical form. The loop, data order, hooks and checkpoints stay in
core; a backend never sees them.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from crosstrain.checkpoint.format import CanonicalState
    from crosstrain.spec.schema import Spec

from .capabilities import NEEDS, Capabilities, ExportFormat, callback_needs

__all__ = [
    "NEEDS",
    "Backend",
    "Batch",
    "Capabilities",
    "ExportFormat",
    "LaunchRequest",
    "Launcher",
    "Program",
    "RunEnv",
    "StepOutput",
    "callback_needs",
    "predict_inputs",
]

Batch = tuple[Any, Any]
"""`(inputs, targets)` as numpy arrays, sample axis first (targets may be None for predict)."""


def predict_inputs(batch: Any) -> Any:
    """The inputs `Program.predict_step` predicts: `batch[0]` of an `(x, ...)` tuple (or of a
    list whose first item is an array, as a DataLoader yields `[x, y]`); anything else is the
    input array itself, every row of it (a bare numpy/torch/jax array, nested lists)."""
    if isinstance(batch, tuple) or (
        isinstance(batch, list) and batch and hasattr(batch[0], "shape")
    ):
        return batch[0]
    return batch


StepOutput = Any
"""What a step returns: device values only the Program's own `metrics_to_host` understands."""


@dataclass
class RunEnv:
    """Where and how one run executes, resolved from the spec's trainer section and flags.

    Attributes:
        backend: the name the run was asked for, engine included (`keras:jax`); empty when
            built without one (the backend then uses its own name).
        total_steps: optimizer updates the run takes, the length the lr schedule decays over
            (`crosstrain.train.run_length.RunLength.total_steps`, the same value the trainer stops
            at); None when unknown (`build` without `total_steps`, a stream of unknown
            length): schedules then use `crosstrain.nn.optim.DEFAULT_TOTAL_STEPS`.
        steps_per_epoch: training batches per epoch (None: unknown).
        report_grad_norm: train steps must report the metric `grad_norm` (the global gradient
            norm before clipping), because a callback declares it needs it
            (`Callback.needs`); only asked of a backend with `Capabilities.grad_norm`.
    """

    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32"
    strategy: str = "auto"
    seed: int = 0
    run_dir: Path | None = None
    native_model: Any = None
    backend: str = ""
    total_steps: int | None = None
    steps_per_epoch: int | None = None
    report_grad_norm: bool = False


class Program(ABC):
    """A built model with its optimizer and compiled steps, for one backend.

    Subclass it and define the abstract members (`train_step`, `eval_step`, `predict_step`,
    `metrics_to_host`, `get_state`, `set_state`) and `native_model`. Every other member has a
    default here that suits a single-process program on numpy arrays; override what differs.
    Core reads each member directly (no `getattr` probing), so a misspelt override is a
    missing feature you can see in this class, not a silent fallback.
    """

    native_model: Any = None
    """The framework's model (`nn.Module`, `nnx.Module`, `keras.Model`; numpy: the params)."""

    array_kind: str = "numpy"
    """What the steps take as batch arrays: `numpy`, `torch` or `jax` (core converts data
    loaders' tensors to this with the fewest copies, `crosstrain.data.batches`)."""

    world_size: int = 1
    """Processes that run this program together (several: a multi-process run)."""

    collective_state: bool = False
    """True when `get_state` is a collective every rank must call together (FSDP shards): a
    rank that writes no checkpoint still calls it."""

    @abstractmethod
    def train_step(self, batch: Batch) -> StepOutput:
        """One optimizer step; returns device metrics (`loss` and each metric) without syncing."""

    @abstractmethod
    def eval_step(self, batch: Batch) -> StepOutput:
        """Loss and metrics on a batch, no update, no dropout."""

    @abstractmethod
    def predict_step(self, batch: Batch) -> np.ndarray:
        """Model outputs as a numpy array for every row of `predict_inputs(batch)`: the `x` of
        an `(x, ...)` batch, or a bare input array itself (the same on every backend)."""

    @abstractmethod
    def metrics_to_host(self, outputs: list[StepOutput]) -> dict[str, float]:
        """The one sync point: mean of `loss` and metrics over the outputs, weighted by batch size."""

    @abstractmethod
    def get_state(self) -> CanonicalState:
        """Parameters, optimizer slots, step and RNG in canonical form (numpy)."""

    @abstractmethod
    def set_state(self, state: CanonicalState) -> None:
        """Loads a canonical state (possibly written by another backend)."""

    def state_for_write(self) -> CanonicalState:
        """The state for a checkpoint written at once, before the next step: its arrays may be
        views of the program's own buffers (no host copy), valid only until the state changes.
        Default: `get_state()`."""
        return self.get_state()

    def train_steps(self, batches: Batch) -> StepOutput:
        """K optimizer steps in one call; called only if `Capabilities.steps_per_execution`.

        `batches` is `(x, y)` stacked with a leading axis of K equal-sized batches; the output
        counts as K steps in `metrics_to_host`. Default: refuses (nothing declared it).
        """
        raise NotImplementedError(
            f"{type(self).__name__} declares steps_per_execution but defines no train_steps"
        )

    def accumulate_step(self, batches: list[Batch]) -> StepOutput:
        """One optimizer update from several micro-batches (`trainer.accumulate_grad_batches`),
        called only if `Capabilities.accumulate_grad_batches`.

        `batches` holds 2 or more `(x, y)` batches (or `(handle, rows)` from `cache_data`);
        the update uses the gradient of the mean loss over all their rows, i.e. each
        micro-batch's gradient weighted by its rows, so it equals one step on the rows joined
        (`crosstrain.batches.split_micro_batches` gives the equal-sized stack and the shorter
        last batch). The output counts every row in `metrics_to_host`. Default: refuses.
        """
        raise NotImplementedError(
            f"{type(self).__name__} declares accumulate_grad_batches but defines no accumulate_step"
        )

    def set_lr_scale(self, scale: float) -> None:
        """Multiplies the learning rate of the following updates by `scale` (on top of the
        schedule), called only if `Capabilities.lr_scale`: a metric-driven schedule
        (`reduce_on_plateau`) sets it between epochs. Default: refuses."""
        raise NotImplementedError(f"{type(self).__name__} declares lr_scale but defines none")

    def cache_data(self, x: np.ndarray, y: np.ndarray) -> Any:
        """Keeps a whole in-memory data set on the device and returns a handle, or None (the
        default) to be given numpy batches. With a handle, steps receive `(handle, rows)`."""
        return None

    def any_rank(self, flag: bool) -> bool:
        """`flag` or'ed over all ranks (a signal then stops every rank after the same step);
        called only when `world_size > 1`. Default: the flag itself."""
        return flag

    def export(self, path: str | Path, format: str) -> Path:
        """Writes the model (with its current parameters) to `path` in the native `format`
        (one of the backend's `Capabilities.exports`); returns the file written.

        Writes only `path`. Default: UnsupportedFeature (the backend declares no export).
        """
        from crosstrain.errors import UnsupportedFeature

        raise UnsupportedFeature(type(self).__name__, f"export to {format!r}")

    def trace(self, directory: Path) -> AbstractContextManager[Any]:
        """The framework's own profiler recording inside the block into `directory`
        (`trainer.profile`: a few training steps). Default: records nothing."""
        return contextlib.nullcontext()


class Backend(ABC):
    """A framework behind crosstrain, registered through `crosstrain_add_backends`.

    Subclass it, set `name` and `extra`, and define the abstract members; the others have
    defaults. `is_available`, `version` and `capabilities` must not import the framework (the
    `backends` command and the spec checks run without it). A registered object that does not
    subclass `Backend` is wrapped (`crosstrain.plugin.protocol_wrap.as_backend`) if it has every
    abstract member, else the plugin is reported broken with the members it lacks.
    """

    name: str = ""
    """The name runs ask for (`backend="torch"`); `name:variant` selects a variant (`keras:jax`)."""
    extra: str = ""
    """The pip extra that installs its framework: `pip install 'crosstrain[<extra>]'`."""
    note: str = ""
    """A remark for the `crosstrain backends` table (e.g. which engine is fastest); may be long."""

    @abstractmethod
    def is_available(self) -> tuple[bool, str]:
        """Whether the framework can be imported, and why not; must not import it."""

    @abstractmethod
    def version(self) -> str | None:
        """The framework's version, from package metadata (no import)."""

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """The declared capabilities (no framework import)."""

    @abstractmethod
    def accelerators_found(self) -> list[str]:
        """Accelerators usable right now (may import the framework)."""

    @abstractmethod
    def build(self, spec: Spec, env: RunEnv) -> Program:
        """A Program for the spec, or UnsupportedFeature before any training."""

    def check(self, spec: Spec, env: RunEnv) -> None:
        """Raises UnsupportedFeature (or SpecError) for anything this backend cannot run,
        without importing the framework. Default: `capabilities().check` of the spec."""
        self.capabilities().check(spec, env.backend or self.name)

    def accelerator_details(self) -> list[tuple[str, str, list[str]]]:
        """`(accelerator, device names, precisions)` per accelerator found, for the `backends`
        command (may import the framework). Default: none listed."""
        return []

    def launch(self, spec: Spec, argv: list[str], backend: str = "") -> int | None:
        """Starts the command `crosstrain <argv>` in several processes when the spec asks for it
        and no launcher started this one; returns the workers' exit status, or None (the
        default) when this process trains by itself. `backend` is the name the run asked for
        (`keras:jax`: a backend with several engines launches by engine)."""
        return None

    def explain(self, spec: Spec, env: RunEnv) -> dict[str, str]:
        """This backend's lines of the fit plan (`crosstrain fit --explain`, the top of
        `summary.txt`): `{topic: text}`. A topic core already prints (`engine`, `processes`,
        `launcher`, `precision`, `execution`, `sharding`) is replaced by this text; a new one
        is added after them. Decided from the spec and `env` alone: no build, no framework
        import needed. Default: none (core's lines stand)."""
        return {}


@dataclass(frozen=True)
class LaunchRequest:
    """What `crosstrain.fit` hands a `Launcher`: the arguments of the fit, checked by core.

    Attributes:
        backend: the backend name (engine included).
        devices: how many worker processes (`trainer.devices`).
        data, val_data: `(x, y)` arrays given to `fit` instead of `spec.data`, or None.
        resume: the checkpoint directory to start from, or None.
        resume_changed: resume although the spec differs from the checkpoint's.
        run_dir: the run directory rank 0 writes (made by core before launching).
        options: the launcher's own settings (Ray: `address`, `max_failures`).
    """

    backend: str
    devices: int
    data: Any = None
    val_data: Any = None
    resume: Path | None = None
    resume_changed: bool = False
    run_dir: Path | None = None
    options: dict[str, Any] | None = None


class Launcher(ABC):
    """Runs one fit in worker processes that it starts (the built-in `ray`); registered with
    `registry.launchers.add(name, launcher)` in `crosstrain_add_launchers`. Every worker calls
    `crosstrain.fit` with the same spec; the process group comes from the launcher's
    environment (`RANK`, `WORLD_SIZE`, ...), rank 0 writes `request.run_dir`."""

    name: str
    extra: str = ""  # the pip extra its library comes with

    @abstractmethod
    def is_available(self) -> tuple[bool, str]:
        """Whether its library is installed (without importing it) and why not."""

    @abstractmethod
    def fit(self, spec: Spec, request: LaunchRequest) -> Any:
        """Runs the fit in `request.devices` workers; the FitResult of rank 0's run (state and
        history read back from its last checkpoint; no native model in this process)."""
