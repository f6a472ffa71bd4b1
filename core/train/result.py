"""What `fit` returns: the final metrics, the per-epoch history, the state and the model.

`History` is a list of per-epoch dicts (`{"epoch": 0, "step": 6, "train_loss": ...}`), so code
that indexes it keeps working, plus `to_pandas()`; `FitResult.plot()` draws the loss and metric
curves with matplotlib. pandas and matplotlib are imported only when those are called (the
`notebook` extra installs both).

Example:
    >>> result = crosstrain.fit(spec, backend="torch")  # doctest: +SKIP
    >>> result.history.to_pandas()[["epoch", "train_loss", "val_loss"]]  # doctest: +SKIP
    >>> result.plot("curves.png")  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crosstrain.errors import import_optional

if TYPE_CHECKING:
    import numpy as np
    from crosstrain.checkpoint.format import CanonicalState
    from crosstrain.plugin.protocol import Program
    from crosstrain.spec.schema import Spec
    from crosstrain.train.trainer import Trainer
    from matplotlib.figure import Figure
    from pandas import DataFrame

SPLITS = ("train", "val", "test")
"""Metric key prefixes, in the order their curves are drawn."""


class History(list):
    """Per-epoch records of a fit: `epoch`, `step` and every `<split>_<metric>`."""

    def metric_names(self) -> list[str]:
        """The metrics recorded, without split prefix, in first-seen order (`loss`, `accuracy`)."""
        names: dict[str, None] = {}
        for record in self:
            for key in record:
                split, _, name = key.partition("_")
                if split in SPLITS and name:
                    names.setdefault(name)
        return list(names)

    def to_pandas(self) -> DataFrame:
        """One row per epoch; columns `epoch`, `step` and the metrics in first-seen order.

        A metric missing in an epoch (e.g. validation every other epoch) is NaN there.
        """
        pandas = import_optional("pandas", "History.to_pandas()", "notebook")
        columns: dict[str, None] = {}
        for record in self:
            columns.update(dict.fromkeys(record))
        return pandas.DataFrame.from_records(list(self), columns=list(columns))


def _enable_notebook_display() -> None:
    """In a Jupyter kernel, lets a `Figure` show as a PNG (what `%matplotlib inline` sets up)
    unless some figure format is registered already: a figure made without pyplot would
    otherwise show as text."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return
    from IPython.core.pylabtools import select_figure_formats
    from matplotlib.figure import Figure

    if not any(Figure in f.type_printers for f in shell.display_formatter.formatters.values()):
        select_figure_formats(shell, "png")


class _StateWhenRead:
    """`FitResult.state`: given, or (given None) the program's `get_state()` built at the first
    read and kept, so a fit's end holds no host copy of parameters and optimizer slots that
    nobody reads. On the class it raises AttributeError: the dataclass field has no default."""

    def __get__(self, result: FitResult | None, owner: type | None = None) -> CanonicalState:
        if result is None:
            raise AttributeError("state")
        state = result.__dict__.get("_state")
        if state is None and result.program is not None:
            state = result.__dict__["_state"] = result.program.get_state()
        return state

    def __set__(self, result: FitResult, state: CanonicalState | None) -> None:
        result.__dict__["_state"] = state


@dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        metrics: the last epoch's metrics (`train_loss`, `val_accuracy` ...).
        history: one record per epoch (a `History`; any list of dicts given is converted).
        state: the canonical state at the end, copied from the program when first read (so
            read it before training the same program further); `native_model` and `program`
            the backend's objects.
        run_dir, last_checkpoint: where the run's files went (None when nothing was written).
        stopped_early: an early-stopping callback (or `trainer.should_stop`) ended the fit.
        extras: backend- or trainer-specific facts, e.g. `skipped_steps`.
        spec, backend: the spec trained and the backend's name, which `evaluate` and `predict`
            use to score the trained program in memory (no checkpoint needed).
    """

    metrics: dict[str, float]
    history: History
    state: CanonicalState = _StateWhenRead()  # type: ignore[assignment]
    native_model: Any
    program: Program
    run_dir: Path | None = None
    last_checkpoint: Path | None = None
    stopped_early: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    spec: Spec | None = None
    backend: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.history, History):
            self.history = History(self.history)

    def _trained(self, action: str) -> tuple[Spec, Program]:
        from crosstrain.errors import CrosstrainError

        if self.spec is None or self.program is None:
            raise CrosstrainError(
                f"FitResult.{action}: this result holds no trained program (a resumed run that "
                f"was already finished); use crosstrain.{action}(spec, checkpoint) instead"
            )
        return self.spec, self.program

    def evaluate(self, data: Any = None) -> dict[str, float]:
        """Loss and metrics of the trained model, in memory (`fit(..., run_dir=False)` is
        enough): on `data` (`(x, y)` arrays or a loader) keyed `test_...`; without it on the
        spec's validation split (`val_...`), or all of its data when it holds none out
        (`train_...`). Same as `crosstrain.evaluate` on a checkpoint of this state."""
        from crosstrain.train.inference import evaluate_program

        spec, program = self._trained("evaluate")
        return evaluate_program(spec, program, self.backend, data)[0]

    def predict(self, x: Any = None) -> np.ndarray:
        """Outputs of the trained model for inputs `x` (an array or a loader), in memory;
        default every input of the spec's data. Same as `crosstrain.predict`."""
        from crosstrain.train.inference import predict_program

        spec, program = self._trained("predict")
        return predict_program(spec, program, self.backend, x)

    def plot(
        self, path: str | Path | None = None, steps: list[dict[str, float]] | None = None
    ) -> Figure:
        """Loss and each metric per epoch, train against val (and test), one panel each; with
        `steps` (records `{"step", "train_loss", "lr"}` at each metric pull, what `crosstrain
        fit` collects for curves.png) two more panels: training loss and learning rate per step.

        The figure is built without pyplot, so no window opens and no display is needed; it is
        saved as PNG when `path` is given (parent directories are created).
        """
        figure_module = import_optional("matplotlib.figure", "FitResult.plot()", "notebook")
        _enable_notebook_display()
        ticker = import_optional("matplotlib.ticker", "FitResult.plot()", "notebook")
        names = self.history.metric_names()
        step_panels = [k for k in ("train_loss", "lr") if any(k in r for r in steps or [])]
        panels = max(1, len(names)) + len(step_panels)
        figure = figure_module.Figure(figsize=(4.5 * panels, 3.5), layout="tight")
        axes = figure.subplots(1, panels, squeeze=False)[0]
        for ax, key in zip(axes[panels - len(step_panels) :], step_panels, strict=True):
            points = [(r["step"], r[key]) for r in steps or [] if key in r]
            ax.plot(*zip(*points, strict=True), linewidth=1, label=key)
            title = "loss per step" if key == "train_loss" else "learning rate per step"
            ax.set(xlabel="step", ylabel=key, title=title)
            ax.grid(alpha=0.3)
        for ax, name in zip(axes, names, strict=False):
            for split in SPLITS:
                key = f"{split}_{name}"
                points = [(r["epoch"] + 1, r[key]) for r in self.history if key in r]
                if points:
                    epochs, values = zip(*points, strict=True)
                    ax.plot(epochs, values, marker="o", markersize=3, label=key)
            ax.set(xlabel="epoch", ylabel=name, title=name)
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend()
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(target, format="png", dpi=100)
        return figure


def fit_result(trainer: Trainer) -> FitResult:
    """The `FitResult` of a trainer whose loop ended: the last epoch's metrics, the history, the
    program's current state and model, and where the run's files went."""
    last = trainer.history[-1] if trainer.history else {}
    return FitResult(
        metrics={k: v for k, v in last.items() if k not in ("epoch", "step")},
        history=trainer.history,
        state=None,  # built when read
        native_model=trainer.program.native_model,
        program=trainer.program,
        run_dir=trainer.run_dir,
        last_checkpoint=trainer.last_checkpoint,
        stopped_early=trainer.stopped_early,
        extras={"skipped_steps": trainer.skipped_steps},
    )
