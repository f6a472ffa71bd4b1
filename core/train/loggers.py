"""`Logger`: the base class of a logger that a spec names in `trainer.loggers`, with options.

A logger is a `Callback` made for each fit that writes a run directory. Its plugin registers
the class under a name (`registry.loggers.add("jsonl", JsonLinesLogger)` in
`crosstrain_add_loggers`); a spec asks for it as `loggers: [csv, jsonl]` or, with options,
`loggers: [{name: jsonl, every_n_epochs: 2}]`. The options are validated against the class's
`options_model` (a pydantic model) together with the rest of the spec, before anything is
built, so a bad one fails like any spec field: `trainer.loggers[1].every_n_epochs: ...`.

Example:
    >>> from pydantic import BaseModel, PositiveInt
    >>> class EveryOptions(BaseModel):
    ...     every_n_epochs: PositiveInt = 1
    >>> class PrintLogger(Logger):
    ...     options_model = EveryOptions
    ...     def on_epoch_end(self, stage, epoch, metrics):
    ...         if stage == "train" and epoch % self.options.every_n_epochs == 0:
    ...             print(epoch, metrics)
    >>> PrintLogger("runs/x", spec=None, options={"every_n_epochs": 2}).options.every_n_epochs
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from crosstrain.train.callbacks import Callback
from pydantic import BaseModel, ConfigDict


class NoOptions(BaseModel):
    """The options of a logger that takes none: every key is refused with its path."""

    model_config = ConfigDict(extra="forbid")


class Logger(Callback):
    """Base class of the loggers named in `trainer.loggers`; subclass it and implement hooks.

    Attributes:
        options_model: the pydantic model of the logger's options (class attribute; default
            `NoOptions`). Its fields are the keys a spec may write next to `name`; unknown keys
            are refused unless the model allows extra keys.
        run_dir: the run directory of the fit (`runs/<name>/<time>/`).
        spec: the validated spec of the fit.
        options: the validated options, an instance of `options_model`.

    crosstrain calls `LoggerClass(run_dir, spec, options)` with the item's keys besides `name`
    (`{}` for a bare name). A factory without an `options_model` (any callable, such as a
    plain `Callback` class) is called as `factory(run_dir, spec)` and takes no options.
    """

    options_model: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, run_dir: Path | str, spec: Any, options: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.spec = spec
        self.options: Any = self.options_model.model_validate(options or {})


def make_logger(factory: Any, options: dict[str, Any], run_dir: Path, spec: Any) -> Any:
    """The callback a registered logger factory makes for one fit: `factory(run_dir, spec,
    options)` when it declares an `options_model`, else `factory(run_dir, spec)`."""
    if getattr(factory, "options_model", None) is None:
        return factory(run_dir, spec)
    return factory(run_dir, spec, options)
