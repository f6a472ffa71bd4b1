"""Precisions, the gradient scaler's skipped steps, accelerator settings and device gaps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import crosstrain as ct  # noqa: E402
from crosstrain.backends.torch.device import (  # noqa: E402
    describe_accelerators,
    precision_policy,
    supported_precisions,
)
from crosstrain.backends.torch.plugin import TorchBackend  # noqa: E402
from crosstrain.errors import UnsupportedFeature  # noqa: E402
from crosstrain.nn.model import forward  # noqa: E402
from crosstrain.plugin.protocol import RunEnv  # noqa: E402
from crosstrain.spec.schema import validate_spec  # noqa: E402

MLP = [{"type": "Dense", "units": 16, "activation": "tanh"}, {"type": "Dense", "units": 3}]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


def make_spec(**trainer: Any) -> Any:
    return validate_spec(
        {
            "seed": 1,
            "model": {"input_shape": [8], "layers": MLP},
            "metrics": ["accuracy"],
            "optimizer": {"name": "sgd", "lr": 0.1},
            "trainer": trainer,
        }
    )


def build(precision: str = "32", accelerator: str = "cpu", **trainer: Any) -> Any:
    spec = make_spec(precision=precision, accelerator=accelerator, **trainer)
    return TorchBackend().build(spec, RunEnv(accelerator=accelerator, precision=precision))


def batch(n: int = 32, scale: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(n, 8))).astype(np.float32), rng.integers(0, 3, size=n)


@pytest.mark.parametrize(("precision", "tol"), [("bf16-mixed", 3e-2), ("16-mixed", 3e-3)])
def test_mixed_precision_computes_in_half_and_keeps_float32_weights(
    precision: str, tol: float
) -> None:
    program = build(precision)
    x, _ = batch()
    state = program.get_state()
    expected = forward(program.spec.model, state.params, x)
    got = program.predict_step(x)
    assert got.dtype == np.float32
    assert all(p.dtype == torch.float32 for p in program.params)
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    assert np.abs(got - expected).max() > 1e-6


def test_bf16_true_keeps_bfloat16_weights_and_float32_checkpoints() -> None:
    program = build("bf16-true")
    x, y = batch()
    program.train_step((x, y))
    state = program.get_state()
    assert all(v.dtype == np.float32 for v in state.params.values())
    rounded = {k: v.astype(np.float32) for k, v in state.params.items()}
    for key, value in rounded.items():
        as_bf16 = torch.from_numpy(value).to(torch.bfloat16).float().numpy()
        np.testing.assert_array_equal(value, as_bf16, err_msg=key)
    program.set_state(state)
    again = program.get_state()
    for key in state.params:
        np.testing.assert_array_equal(again.params[key], state.params[key])


def test_gradient_scaler_skips_steps_on_inf_and_counts_them() -> None:
    program = build("16-mixed")
    x, y = batch(scale=300.0)
    scale = program.scaler.get_scale()
    outputs, skipped = [], 0
    for _ in range(30):
        before = program.get_state().params
        out = program.train_step((x, y))
        outputs.append(out)
        after = program.get_state().params
        unchanged = all(np.array_equal(before[k], after[k]) for k in before)
        assert program.train_names[-1] == "skipped"
        assert bool(out[-1]) == unchanged
        skipped += unchanged
        if not unchanged:
            break
    assert 0 < skipped < 30
    assert program.scaler.get_scale() == scale / 2**skipped
    values = program.metrics_to_host(outputs)
    assert program.skipped_steps == skipped
    assert values["skipped"] == pytest.approx(skipped / len(outputs))
    assert np.isfinite(values["loss"])


def test_skipped_steps_reach_the_history(tmp_path: Any) -> None:
    x, y = batch(96, scale=300.0)
    spec = make_spec(precision="16-mixed", accelerator="cpu", max_epochs=2, progress=False)
    spec = spec.override({"data.batch_size": 32, "trainer.log_every_n_steps": 1})
    result = ct.fit(spec, backend="torch", data=(x, y), run_dir=tmp_path)
    assert result.program.skipped_steps > 0
    assert result.history[0]["train_skipped"] > 0
    assert result.history[-1]["train_skipped"] < result.history[0]["train_skipped"]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "train_skipped" in header


def test_no_scaler_no_skipped_metric() -> None:
    program = build("32")
    out = program.train_step(batch())
    assert "skipped" not in program.train_names and len(out) == 1 + len(program.train_names)
    assert "skipped" not in program.metrics_to_host([out])
    assert program.skipped_steps == 0


def test_float64_trains_in_float64() -> None:
    program = build("64")
    x, y = batch()
    program.train_step((x, y))
    assert all(p.dtype == torch.float64 for p in program.params)
    assert all(v.dtype == np.float64 for v in program.get_state().params.values())


def test_matmul_precision_and_cudnn_benchmark_options() -> None:
    previous = torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark
    allow = torch.backends.cudnn.allow_tf32
    try:
        build(matmul_precision="high", cudnn_benchmark=True)
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.benchmark
        build(matmul_precision="highest", cudnn_benchmark=False)
        assert torch.get_float32_matmul_precision() == "highest"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cudnn.benchmark
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.backends.cudnn.benchmark = previous[1]
        torch.backends.cudnn.allow_tf32 = allow


@pytest.mark.parametrize(
    ("device", "precision"), [("mps", "64"), ("xla", "64"), ("xla", "16-mixed")]
)
def test_device_gaps_are_refused_up_front(device: str, precision: str) -> None:
    with pytest.raises(UnsupportedFeature, match=precision):
        precision_policy(precision, torch.device(device))
    assert precision not in supported_precisions(device)


@pytest.mark.parametrize("strategy_on", ["mps", "tpu"])
def test_data_parallel_only_on_cpu_and_cuda(strategy_on: str) -> None:
    spec = make_spec(strategy="ddp", devices=2)
    for strategy in ("ddp", "auto"):
        env = RunEnv(accelerator=strategy_on, devices=2, strategy=strategy)
        with pytest.raises(UnsupportedFeature, match="devices=2"):
            TorchBackend().check(spec, env)


def test_accelerator_details_list_precisions() -> None:
    rows = describe_accelerators()
    assert rows[0][0] == "cpu" and "bf16-mixed" in rows[0][2] and "64" in rows[0][2]
    assert [r[0] for r in rows] == TorchBackend().accelerators_found()


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_cuda_uses_fused_optimizers_and_pinned_copies(name: str) -> None:
    spec = make_spec(accelerator="cuda").override({"optimizer.name": name})
    program = TorchBackend().build(spec, RunEnv(accelerator="cuda"))
    assert program.optimizer.defaults.get("fused") is True
    assert program._pin and program.device.type == "cuda"


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_cuda_train_step_never_syncs_with_the_host(precision: str) -> None:
    spec = make_spec(accelerator="cuda", precision=precision).override({"optimizer.name": "adam"})
    program = TorchBackend().build(spec, RunEnv(accelerator="cuda", precision=precision))
    data = batch()
    program.train_step(data)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outputs = [program.train_step(data) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert np.isfinite(program.metrics_to_host(outputs)["loss"])
