"""Frozen layers and a torch state_dict on Keras's torch engine (frozen weights there are torch
tensors without `requires_grad`), in a fresh interpreter (one Keras engine per process).
keras:tensorflow is covered in process by test_given_weights and test_frozen_layers. The same
check passes with `"jax"` added to the engines below; it is left out to keep the suite short
(a fresh interpreter costs about 20 s of CPU)."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, run_python

pytest.importorskip("torch")
pytest.importorskip("keras")

CHECK = r"""
import json, sys, tempfile
import numpy as np, torch
import crosstrain as ct
from safetensors.torch import save_file
sys.path.insert(0, "tests")
from test_given_weights import Net, _spec
from test_frozen_layers import FROZEN, _spec as frozen_spec
from crosstrain.nn.model import init_params

backend = sys.argv[1]
torch.manual_seed(0)
net = Net().eval()
x = np.random.default_rng(0).normal(size=(5, 12, 12, 1)).astype(np.float32)
with torch.no_grad():
    logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
path = tempfile.mkdtemp() + "/net.safetensors"
save_file(net.state_dict(), path)
out = np.asarray(ct.build(_spec({"weights": path}), backend=backend).predict_step((x, None)))

rng = np.random.default_rng(0)
xs, ys = rng.normal(size=(32, 6)).astype(np.float32), rng.integers(0, 3, 32)
spec = ct.load_spec(frozen_spec())
initial = init_params(spec.model, spec.seed)
state = ct.fit(spec, backend=backend, data=(xs, ys), run_dir=False).state
frozen_moved = max(float(np.abs(state.params[n] - initial[n]).max()) for n in FROZEN)
others_moved = min(float(np.abs(state.params[n] - v).max()) for n, v in initial.items()
                   if n not in FROZEN)
print("RESULT", json.dumps({"logits_error": float(np.abs(out - logits).max()),
                            "frozen_moved": frozen_moved, "others_moved": others_moved,
                            "slots": sorted({k.split("/", 1)[1] for k in state.optimizer})}))
"""


@pytest.mark.parametrize("engine", ["torch"])
def test_keras_engines_load_torch_weights_and_keep_frozen_layers(engine: str) -> None:
    env = {
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": engine,
        "CROSSTRAIN_KERAS_ENGINE": engine,
    }
    code = f"import sys; sys.argv = ['x', 'keras:{engine}']\n" + CHECK
    done = run_python(code, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(row for row in done.stdout.splitlines() if row.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["logits_error"] < 1e-5
    assert result["frozen_moved"] == 0.0 and result["others_moved"] > 1e-3
    assert result["slots"] == ["dense_3/bias", "dense_3/kernel"]
