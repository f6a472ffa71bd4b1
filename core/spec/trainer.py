"""`trainer:` of a spec — the engineering: run length, precision, devices, checkpoints,
early stopping, callbacks and loggers (`TrainerSpec` and its parts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_serializer,
    model_validator,
)


def _number_as_text(value: Any) -> Any:
    """`precision: 32` in YAML (or `--set trainer.precision=32`) means the string "32"."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Precision = Annotated[
    Literal["32", "64", "16-mixed", "bf16-mixed", "bf16-true"], BeforeValidator(_number_as_text)
]
Accelerator = Literal["auto", "cpu", "cuda", "mps", "tpu"]


def _batch_limit(least: int) -> Callable[[float], float]:
    def check(value: float) -> float:
        if isinstance(value, int) and value < least:
            raise ValueError(f"a count of batches must be >= {least}, got {value}")
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(
                f"a fraction of the epoch must be in (0, 1], got {value} (an integer is a count)"
            )
        return value

    return check


TrainLimit = Annotated[StrictInt | StrictFloat, AfterValidator(_batch_limit(1))]
"""Batches per epoch: an integer count >= 1 or a float fraction in (0, 1]."""
ValLimit = Annotated[StrictInt | StrictFloat, AfterValidator(_batch_limit(0))]
"""Validation batches per pass: an integer count (0: none) or a float fraction in (0, 1]."""


def _dev_run(value: bool | int) -> bool | int:
    if not isinstance(value, bool) and value < 1:
        raise ValueError(f"true, false or a number of batches >= 1, got {value}")
    return value


class EarlyStoppingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: NonNegativeInt = 3
    min_delta: NonNegativeFloat = 0.0
    baseline: float | None = Field(
        None,
        description="stop unless `monitor` beats this value within `patience` epochs (Keras)",
    )
    restore_best_weights: bool = Field(
        False,
        description="when stopping, put back the weights of the best epoch (Keras); the state "
        "is kept in host memory",
    )
    check_finite: bool = Field(
        True, description="stop as soon as `monitor` is NaN or infinite (Lightning)"
    )


class CheckpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every_n_epochs: PositiveInt = 1
    keep: PositiveInt = 3
    keep_best: bool = True
    save_top_k: NonNegativeInt | None = Field(
        None,
        description="keep the k best checkpoints by monitor/mode besides the `keep` last "
        "(default: 1 with keep_best, else 0)",
    )
    monitor: str | None = Field(
        None, description="metric for the best checkpoints (default: val_loss, else train_loss)"
    )
    mode: Literal["min", "max"] = "min"
    every_n_steps: PositiveInt | None = Field(
        None,
        description="also write a checkpoint every N optimizer steps, mid-epoch included "
        "(resumes exactly)",
    )
    every_minutes: PositiveFloat | None = Field(
        None,
        description="also write a checkpoint when this many minutes passed since the last one "
        "(checked at step boundaries)",
    )
    async_save: bool = Field(
        False,
        description="write checkpoints on a background thread (the state is copied to host "
        "memory first; at most one write in flight); also spelt `async`",
    )

    @model_validator(mode="before")
    @classmethod
    def _async_spelling(cls, data: Any) -> Any:
        """`async` (a Python keyword, so not a field name) is `async_save`; it wins over both."""
        if isinstance(data, dict) and "async" in data:
            data = {k: v for k, v in data.items() if k != "async"} | {"async_save": data["async"]}
        return data

    @property
    def top_k(self) -> int:
        """How many best checkpoints are kept: `save_top_k`, else 1 with `keep_best`, else 0."""
        if self.save_top_k is not None:
            return self.save_top_k
        return 1 if self.keep_best else 0


def _callback_item(value: Any) -> Any:
    """`timer` is short for `{name: timer}`."""
    return {"name": value} if isinstance(value, str) else value


class CallbackSpec(BaseModel):
    """One entry of `trainer.callbacks`: a registered name plus that callback's own options,
    written flat (`{name: timer, max_time: "00:10:00"}`) and checked by the callback's model."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def options(self) -> dict[str, Any]:
        """The keys besides `name`."""
        return dict(self.model_extra or {})


NamedCallback = Annotated[CallbackSpec, BeforeValidator(_callback_item)]


class LoggerSpec(BaseModel):
    """One entry of `trainer.loggers`: a registered name (`csv`), or a mapping of the name and
    that logger's own options written flat (`{name: jsonl, every_n_epochs: 2}`), checked by
    the logger's `options_model` (`crosstrain.Logger`)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="a registered logger (`crosstrain plugins` lists them)")

    @property
    def options(self) -> dict[str, Any]:
        """The keys besides `name`."""
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def _name_alone(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A logger without options is written as its bare name, as a spec names it."""
        data = handler(self)
        return self.name if not self.model_extra else data


class _NameOrMapping:
    """JSON Schema of an item that a spec writes as a bare name or a mapping with `name`."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: GetJsonSchemaHandler) -> Any:
        return {"anyOf": [{"type": "string"}, handler(core_schema)]}


NamedLogger = Annotated[LoggerSpec, BeforeValidator(_callback_item), _NameOrMapping()]


class TrainerSpec(BaseModel):
    """`trainer:` — the engineering: how long, where, in which precision, what to report."""

    model_config = ConfigDict(extra="forbid")
    max_epochs: PositiveInt = 10
    max_steps: PositiveInt | None = None
    precision: Precision = "32"
    accelerator: Accelerator = "auto"
    devices: PositiveInt = 1
    strategy: Literal["auto", "ddp", "fsdp", "data_parallel"] = "auto"
    compile: bool = False
    cudnn_benchmark: bool | None = Field(
        None, description="cuDNN autotuning for fixed input shapes (torch on CUDA); unset: default"
    )
    matmul_precision: Literal["highest", "high", "medium"] | None = Field(
        None, description="float32 matmuls: high/medium allow TF32 on NVIDIA GPUs; unset: default"
    )
    steps_per_execution: PositiveInt = 1
    accumulate_grad_batches: PositiveInt = Field(
        1,
        description="micro-batches of `data.batch_size` per optimizer step: the same update as "
        "one batch N times larger (Lightning's `accumulate_grad_batches`); steps, schedules and "
        "checkpoints count optimizer steps",
    )
    fast_dev_run: Annotated[StrictBool | StrictInt, AfterValidator(_dev_run)] = Field(
        False,
        description="true or N: run 1 (or N) training and validation batches, one epoch, no "
        "checkpoints or loggers, then stop (a smoke test, as in Lightning)",
    )
    limit_train_batches: TrainLimit | None = Field(
        None,
        description="training batches per epoch: a count, or a fraction (0, 1] of the epoch",
    )
    limit_val_batches: ValLimit | None = Field(
        None,
        description="validation batches per pass: a count (0: no validation), or a fraction",
    )
    val_check_interval: PositiveInt | None = Field(
        None,
        description="also validate every N optimizer steps inside an epoch (the epoch's end "
        "still validates)",
    )
    deterministic: bool = Field(
        False,
        description="reproducible kernels: torch deterministic algorithms, XLA/TF op "
        "determinism; slower (see design.md)",
    )
    profile: bool = Field(
        False,
        description="time each phase (data, step, metric pull, callbacks, checkpoint) into "
        "profile.txt and trace training steps 2-21 with the framework's profiler into profile/",
    )
    stateful: bool | Literal["streams"] = Field(
        False,
        description="carry each LSTM/GRU's final state of a batch into the next (truncated "
        "BPTT; reset at each epoch and evaluation pass, checkpointed): true, row i of batch "
        "k+1 continues row i of batch k (Keras's stateful=True; needs data.shuffle: false); "
        "streams, the samples in order are one sequence's windows, cut into batch_size streams",
    )
    log_every_n_steps: PositiveInt = 50
    val_every_n_epochs: PositiveInt = 1
    progress: bool = True
    loggers: list[NamedLogger] = Field(default_factory=lambda: [LoggerSpec(name="csv")])
    early_stopping: EarlyStoppingSpec | None = None
    callbacks: list[NamedCallback] = Field(
        default_factory=list,
        description="registered callbacks by name, e.g. [lr_monitor, {name: timer, max_time: 60}]",
    )
    checkpoint: CheckpointSpec | None = Field(default_factory=CheckpointSpec)
    detect_anomaly: bool = Field(
        True, description="stop on a non-finite loss and never save non-finite parameters"
    )
    on_nan: Literal["raise", "skip"] = Field(
        "raise", description="skip: undo and count steps whose loss is not finite"
    )
    run_dir: str = "runs"

    @model_validator(mode="after")
    def _compatible(self) -> TrainerSpec:
        """Gradient accumulation groups micro-batches itself; fused steps and `on_nan: skip`
        (which undo single steps) would cut its groups. Determinism excludes autotuning."""
        if self.accumulate_grad_batches > 1:
            if self.steps_per_execution > 1:
                raise ValueError(
                    "accumulate_grad_batches > 1 cannot be combined with steps_per_execution > 1"
                )
            if self.on_nan == "skip":
                raise ValueError("accumulate_grad_batches > 1 cannot be combined with on_nan: skip")
        if self.deterministic and self.cudnn_benchmark:
            raise ValueError(
                "deterministic: true cannot be combined with cudnn_benchmark: true "
                "(autotuning picks kernels by timing)"
            )
        return self
