"""The torch backend on XLA through torch_xla's PJRT runtime (`make test-xla`: PJRT_DEVICE=CPU).

torch_xla needs its own torch release, so these tests are skipped in the main venv and run in
`.venv-xla`, where XLA compiles real programs for the host CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("PJRT_DEVICE", "CPU")
torch = pytest.importorskip("torch")
pytest.importorskip("torch_xla")

import crosstrain as ct  # noqa: E402
from crosstrain.backends.torch.device import select_device  # noqa: E402
from crosstrain.backends.torch.plugin import TorchBackend  # noqa: E402
from crosstrain.errors import UnsupportedFeature  # noqa: E402
from crosstrain.nn.model import forward  # noqa: E402
from crosstrain.nn.optim import reference_step  # noqa: E402
from crosstrain.plugin.protocol import RunEnv  # noqa: E402
from crosstrain.spec.schema import validate_spec  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LAYERS = [
    {"type": "Conv1D", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "LayerNorm"},
    {"type": "Flatten"},
    {"type": "Dense", "units": 3},
]


def build(precision: str = "32", optimizer: dict[str, Any] | None = None) -> Any:
    spec = validate_spec(
        {
            "seed": 2,
            "model": {"input_shape": [6, 2], "layers": LAYERS},
            "metrics": ["accuracy"],
            "optimizer": optimizer or {"name": "adam", "lr": 0.01},
            "trainer": {"accelerator": "tpu", "precision": precision},
        }
    )
    return TorchBackend().build(spec, RunEnv(accelerator="tpu", precision=precision))


def batch(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6, 2)).astype(np.float32), rng.integers(0, 3, size=n)


def test_tpu_accelerator_is_an_xla_device_with_a_step_marker() -> None:
    assert select_device("tpu").type == "xla"
    program = build()
    assert program.device.type == "xla" and program._sync is not None
    assert "tpu" in TorchBackend().accelerators_found()


def test_forward_matches_the_numpy_reference() -> None:
    program = build()
    x, _ = batch()
    expected = forward(program.spec.model, program.get_state().params, x)
    np.testing.assert_allclose(program.predict_step(x), expected, rtol=1e-4, atol=1e-5)


def test_one_adam_step_matches_the_reference() -> None:
    program = build()
    x, y = batch()
    before = program.get_state()
    program.optimizer.zero_grad(set_to_none=True)
    program._mode(True)
    loss, _ = program._forward_loss(program._inputs(x), program._targets(y))
    loss.backward()
    from crosstrain.backends.torch.state import to_canonical, trainable

    grads = {r.name: to_canonical(r.tensor.grad, r.layout) for r in trainable(program.refs)}
    expected, _ = reference_step(program.spec.optimizer, before.params, grads, {}, 0)
    program.train_step((x, y))
    after = program.get_state()
    for name, value in expected.items():
        np.testing.assert_allclose(after.params[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_bf16_mixed_trains_and_16_mixed_is_refused() -> None:
    program = build("bf16-mixed")
    outputs = [program.train_step(batch()) for _ in range(3)]
    assert np.isfinite(program.metrics_to_host(outputs)["loss"])
    with pytest.raises(UnsupportedFeature, match="16-mixed"):
        build("16-mixed")


def test_digits_mlp_reaches_95_percent_on_xla(tmp_path: Path) -> None:
    spec = ct.load_spec(EXAMPLES / "digits_mlp.yaml").override(
        {"trainer.accelerator": "tpu", "trainer.progress": False}
    )
    result = ct.fit(spec, backend="torch", run_dir=tmp_path)
    assert result.program.device.type == "xla"
    assert result.metrics["val_accuracy"] >= 0.95
