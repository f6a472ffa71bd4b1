"""Issue 16 trainer options refused with one clear line (exit 2, no file written): gradient
accumulation, batch limits, fast_dev_run, mid-epoch validation and checkpoints, early stopping
and determinism. One row per case on the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_inputs import Refusal, assert_refused, run_cli, snapshot
from conftest import tiny_spec

CONFIG = "config spec.json --set"
FIT = "fit spec.json --backend torch --no-progress --set"

CASES = [
    (
        "accumulate_zero",
        f"{CONFIG} trainer.accumulate_grad_batches=0",
        ("trainer.accumulate_grad_batches", "positive"),
    ),
    (
        "accumulate_text",
        f"{CONFIG} trainer.accumulate_grad_batches=two",
        ("trainer.accumulate_grad_batches", "integer"),
    ),
    (
        "accumulate_with_fused_steps",
        f"{FIT} trainer.accumulate_grad_batches=2 --set trainer.steps_per_execution=4",
        ("accumulate_grad_batches > 1 cannot be combined with steps_per_execution > 1",),
    ),
    (
        "accumulate_with_on_nan_skip",
        f"{CONFIG} trainer.accumulate_grad_batches=2 --set trainer.on_nan=skip",
        ("cannot be combined with on_nan: skip",),
    ),
    (
        "limit_train_zero",
        f"{CONFIG} trainer.limit_train_batches=0",
        ("trainer.limit_train_batches", "must be >= 1, got 0"),
    ),
    (
        "limit_train_fraction_over_one",
        f"{CONFIG} trainer.limit_train_batches=1.5",
        ("trainer.limit_train_batches", "(0, 1], got 1.5"),
    ),
    (
        "limit_val_negative",
        f"{CONFIG} trainer.limit_val_batches=-1",
        ("trainer.limit_val_batches", "must be >= 0, got -1"),
    ),
    (
        "fast_dev_run_zero",
        f"{CONFIG} trainer.fast_dev_run=0",
        ("trainer.fast_dev_run", "true, false or a number of batches >= 1"),
    ),
    (
        "val_check_interval_zero",
        f"{CONFIG} trainer.val_check_interval=0",
        ("trainer.val_check_interval", "positive"),
    ),
    (
        "every_n_steps_zero",
        f"{CONFIG} trainer.checkpoint.every_n_steps=0",
        ("trainer.checkpoint.every_n_steps", "positive"),
    ),
    (
        "every_minutes_negative",
        f"{CONFIG} trainer.checkpoint.every_minutes=-5",
        ("trainer.checkpoint.every_minutes", "positive"),
    ),
    (
        "baseline_text",
        f"{CONFIG} trainer.early_stopping.baseline=low --set trainer.early_stopping.monitor=val_loss",
        ("trainer.early_stopping.baseline", "number"),
    ),
    (
        "restore_best_weights_text",
        f"{CONFIG} trainer.early_stopping.restore_best_weights=maybe --set trainer.early_stopping.patience=1",
        ("trainer.early_stopping.restore_best_weights",),
    ),
    (
        "deterministic_with_autotuning",
        f"{CONFIG} trainer.deterministic=true --set trainer.cudnn_benchmark=true",
        ("deterministic: true cannot be combined with cudnn_benchmark: true",),
    ),
]


@pytest.mark.parametrize(("line", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused(line: str, fragments: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(tiny_spec()))
    before = snapshot(tmp_path)
    done = run_cli(line, tmp_path)
    assert_refused(done, Refusal(fragments=fragments, may_write=()), before, tmp_path)
