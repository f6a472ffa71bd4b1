"""Devices and data parallel: on every declared accelerator present on this machine the
forward matches the numpy reference; a declared data-parallel strategy over two devices
trains like one device."""

from __future__ import annotations

import pytest
from crosstrain.conformance.assertions import assert_all_close, assert_close
from crosstrain.conformance.data import normal, spec
from crosstrain.nn.model import forward, init_params
from crosstrain.spec.schema import load_spec

ACCELERATORS = ["cpu", "cuda", "mps", "tpu"]
STRATEGIES = ["ddp", "fsdp", "data_parallel"]
LAYERS = [{"type": "Dense", "units": 8}, {"type": "ReLU"}, {"type": "Dense", "units": 3}]


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_accelerator_forward(ct_target, accelerator):
    if accelerator not in ct_target.caps.accelerators:
        pytest.skip(f"not declared by {ct_target.name}: accelerator {accelerator}")
    found = ct_target.backend.accelerators_found()
    if accelerator not in found:
        pytest.skip(f"declared, but no {accelerator} on this machine (found: {', '.join(found)})")
    data = spec(LAYERS, (6,), accelerator=accelerator)
    ct_target.require_spec(data)
    x = normal((4, 6), seed=6)
    model = load_spec(data).model
    out = ct_target.build(data).predict_step((x, None))
    tolerance = "32" if accelerator == "cpu" else "bf16-mixed"
    assert_close(
        out, forward(model, init_params(model, 0), x), tolerance, f"forward on {accelerator}"
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_data_parallel_trains_like_one_device(ct_target, strategy):
    if strategy not in ct_target.caps.strategies:
        pytest.skip(f"not declared by {ct_target.name}: strategy {strategy}")
    parallel = spec(LAYERS, (6,), devices=2, strategy=strategy)
    ct_target.require_spec(parallel)
    try:
        program = ct_target.build(parallel, total_steps=2)
    except Exception as err:  # fewer than two devices here: nothing to compare
        pytest.skip(f"declared, but two devices are not usable here: {type(err).__name__}: {err}")
    single = ct_target.build(spec(LAYERS, (6,)), total_steps=2)
    for seed in range(2):
        batch = (normal((8, 6), seed=seed), normal((8, 3), seed=seed + 50))
        program.train_step(batch)
        single.train_step(batch)
    assert_all_close(program.get_state().params, single.get_state().params, "training", "parameter")
