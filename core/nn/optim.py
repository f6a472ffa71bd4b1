"""Optimizers and learning-rate schedules under their former module name.

Each optimizer is written once in `crosstrain.nn.optimizers` (its options, slots and array-API
rule), each schedule in `crosstrain.nn.schedules`; every backend must reproduce
`reference_step`, the numpy run of the rule. Option names follow Keras (`beta_1`, `epsilon`,
`rho`); the rules of sgd, adam, adamw and rmsprop are PyTorch's (L2 `weight_decay` except
adamw's decoupled decay; momentum buffers accumulate gradients).

Example:
    >>> Adam(lr=3e-4).name
    'adam'
"""

from __future__ import annotations

from crosstrain.nn.optimizers import (  # noqa: F401 (re-exported)
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    AdamW,
    AnyOptimizer,
    Lion,
    Optimizer,
    ParamOptions,
    RMSprop,
    clip_by_global_norm,
    reference_step,
    slot_names,
)
from crosstrain.nn.schedules import (  # noqa: F401 (re-exported)
    BUILTIN_SCHEDULES,
    DEFAULT_TOTAL_STEPS,
    HOST,
    AnySchedule,
    Constant,
    Cosine,
    Exponential,
    HostScalars,
    LinearDecay,
    LinearWarmup,
    Schedule,
    StepDecay,
    applied_lr,
    checked_schedule,
    schedule_length,
)

_Optimizer = Optimizer  # the base classes under their former names
_Schedule = Schedule
