"""A layer written once (array-API `forward`, no native class) on every backend: forward equal
to the numpy reference, trained inside each backend's compiled step with the same result as the
same layer with native classes; runtime registration (`ct.register_layer`) and `module:Class`
references in a spec; FLOPs counted by the layers."""

from __future__ import annotations

import json
import os
import sys
from typing import Literal

import crosstrain as ct
import numpy as np
import pytest
from conftest import ROOT, run_python
from crosstrain.nn.layers import Layer

TRAIN_BOTH_FORMS = """
import json, sys
import numpy as np
import crosstrain as ct
from benchmarks.layer_forms import NativeRMSNorm
from crosstrain.nn.model import forward, init_params

ct.register_layer(NativeRMSNorm)
backend, compile_ = sys.argv[1], sys.argv[2] == "1"
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)).astype("float32")
y = rng.integers(0, 3, 64)
out = {}
for layer_type in ("benchmarks.layer_forms:ArrayRMSNorm", "NativeRMSNorm"):
    spec = ct.load_spec({
        "name": "array-layer", "seed": 0,
        "model": {"input_shape": [6], "layers": [
            {"type": "Dense", "units": 8}, {"type": layer_type, "epsilon": 0.01},
            {"type": "ReLU"}, {"type": "Dense", "units": 3}]},
        "data": {"batch_size": 16, "shuffle": False}, "loss": "cross_entropy",
        "optimizer": {"name": "sgd", "lr": 0.5},
        "trainer": {"max_epochs": 2, "progress": False, "compile": compile_},
    })
    program = ct.build(spec, backend=backend)
    reference = forward(spec.model, init_params(spec.model, 0), x)
    error = float(np.abs(np.asarray(program.predict_step((x, None))) - reference).max())
    result = ct.fit(spec, backend=backend, data=(x, y), run_dir=False)
    params = {name.replace("nativermsnorm", "arrayrmsnorm"): value.tolist()
              for name, value in result.state.params.items()}
    out[spec.model.layers[1].type] = {"forward_error": error, "params": params,
                                      "loss": result.metrics["train_loss"]}
print("RESULT", json.dumps(out))
"""

CASES = {
    "torch": ("torch", False),
    "torch-compile": ("torch", True),
    "jax": ("jax", False),
    "keras-jax": ("keras:jax", False),
    "keras-tensorflow": ("keras:tensorflow", False),
    "keras-torch": ("keras:torch", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_array_layer_trains_like_the_native_form(case: str) -> None:
    backend, compile_ = CASES[case]
    env = {"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend.startswith("keras:"):
        engine = backend.partition(":")[2]
        env.update(KERAS_BACKEND=engine, CROSSTRAIN_KERAS_ENGINE=engine)
    code = f"import sys; sys.argv = ['x', {backend!r}, {'1' if compile_ else '0'!r}]\n"
    done = run_python(code + TRAIN_BOTH_FORMS, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(row for row in done.stdout.splitlines() if row.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    array, native = result["ArrayRMSNorm"], result["NativeRMSNorm"]
    assert array["forward_error"] < 1e-5 and native["forward_error"] < 1e-5
    assert array["params"].keys() == native["params"].keys()
    scale = np.asarray(array["params"]["arrayrmsnorm_1/scale"])
    assert np.abs(scale - 1.0).max() > 1e-3  # the scale was trained: gradients reach it
    for name, value in array["params"].items():
        np.testing.assert_allclose(value, native["params"][name], rtol=2e-4, atol=2e-5)
    assert abs(array["loss"] - native["loss"]) < 1e-4


class Doubled(Layer):
    """`2 * x * gain` with a per-feature gain: array API only."""

    type: Literal["TestDoubled"] = "TestDoubled"

    def params(self, input_shape):
        from crosstrain.nn.layers import ParamSpec

        return {"gain": ParamSpec((input_shape[-1],), "ones")}

    def forward(self, xp, params, x, training=False, rng=None):
        return 2 * x * params["gain"]

    def forward_flops(self, input_shape):
        return 2 * input_shape[-1]


def test_register_layer_makes_it_part_of_every_backend_and_of_the_flops() -> None:
    registry = ct.get_registry()
    if "TestDoubled" not in registry.layers:
        assert ct.register_layer(Doubled) is Doubled
    assert registry.layers.owners["TestDoubled"] == "runtime"
    for name in ("torch", "jax", "keras"):
        assert "TestDoubled" in registry.backend(name).capabilities().layers
    spec = ct.load_spec(
        {"model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 5}, Doubled()]}}
    )
    from crosstrain.nn.flops import forward_flops

    assert forward_flops(spec.model) == 2 * 4 * 5 + 2 * 5
    with pytest.raises(ValueError, match="already registered"):
        ct.register_layer(Doubled)


def test_a_layer_without_forward_is_not_declared() -> None:
    class NoForward(Layer):
        type: Literal["TestNoForward"] = "TestNoForward"

    registry = ct.get_registry()
    if "TestNoForward" not in registry.layers:
        ct.register_layer(NoForward)
    assert "TestNoForward" not in registry.backend("jax").capabilities().layers


@pytest.mark.parametrize(
    "reference, message",
    [
        ("benchmarks.layer_forms:Nope", "cannot load layer type"),
        ("benchmarks.layer_forms:EpochTimer", "is not a crosstrain.nn.layers.Layer subclass"),
        ("no_such_module_x:Layer", "No module named 'no_such_module_x'"),
    ],
    ids=["missing-name", "not-a-layer", "missing-module"],
)
def test_bad_layer_references_are_spec_errors(reference: str, message: str) -> None:
    with pytest.raises(ct.SpecError, match=message) as info:
        ct.load_spec({"model": {"input_shape": [4], "layers": [{"type": reference}]}})
    assert "model.layers[0]" in str(info.value)


def test_layer_reference_is_stored_by_type_name_and_a_checkpoint_spec_never_imports() -> None:
    spec = ct.load_spec(
        {"model": {"input_shape": [4], "layers": [{"type": "benchmarks.layer_forms:ArrayRMSNorm"}]}}
    )
    assert spec.model.layers[0].type == "ArrayRMSNorm"
    code = """
import sys, crosstrain as ct
from crosstrain.plugin.registry import references_refused
with references_refused("checkpoint"):
    try:
        ct.load_spec({"model": {"input_shape": [4], "layers": [{"type": "benchmarks.layer_forms:ArrayRMSNorm"}]}})
    except ct.SpecError as err:
        print("refused:", err)
print("imported" if "benchmarks.layer_forms" in sys.modules else "not imported")
"""
    done = run_python(code, cwd=ROOT, env={"PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused:" in done.stdout and "is not imported: checkpoint" in done.stdout
    assert "not imported" in done.stdout.splitlines()[-1]


def test_logger_and_callback_references_resolve_through_their_tables() -> None:
    registry = ct.get_registry()
    from crosstrain.plugins.csv_logger import CSVLogger

    assert registry.loggers.get("crosstrain.plugins.csv_logger:CSVLogger") is CSVLogger
    assert "crosstrain.train.callbacks:Callback" in registry.callbacks
    assert "no_such_module_x:Thing" not in registry.callbacks
    assert "No module named" in registry.callbacks.unknown("no_such_module_x:Thing")
    assert "expected 'package.module:Name'" in registry.loggers.unknown("a b:c")
