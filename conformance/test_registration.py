"""Registration and capabilities: the backend is registered through the plugin hooks, says
what it supports as plain data without importing its framework, and refuses what it does not
declare before any training."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from crosstrain.conformance.data import spec
from crosstrain.errors import UnsupportedFeature
from crosstrain.plugin.protocol import Backend, Capabilities, Program
from crosstrain.plugin.registry import get_registry

FRAMEWORKS = ("torch", "jax", "flax", "optax", "keras", "tensorflow")
PRECISIONS = {"32", "64", "16-mixed", "bf16-mixed", "bf16-true"}
ACCELERATORS = {"cpu", "cuda", "mps", "tpu"}
OPTIMIZERS = {"sgd", "adam", "adamw", "rmsprop"}


def test_backend_is_registered(ct_target):
    backend = ct_target.backend
    assert backend.name == ct_target.name.split(":", 1)[0]
    available, reason = backend.is_available()
    assert isinstance(available, bool) and isinstance(reason, str)
    assert backend.version() is None or isinstance(backend.version(), str)
    assert isinstance(backend.extra, str)


def test_backend_and_program_are_the_protocol_classes(ct_target):
    """Core reads every member directly: the backend is a `Backend` (a plain object is wrapped
    at registration) and `build` returns a `Program`."""
    assert isinstance(ct_target.backend, Backend)
    ct_target.require_layers({"Dense"})
    program = ct_target.build(spec([{"type": "Dense", "units": 2}], (3,)))
    assert isinstance(program, Program), f"build returned a {type(program).__name__}"
    assert program.array_kind in ("numpy", "torch", "jax")
    assert program.world_size >= 1


def test_capabilities_are_declared_data(ct_target):
    caps = ct_target.caps
    assert isinstance(caps, Capabilities)
    registry = get_registry()
    assert caps.layers, "a backend declares at least one layer type"
    assert set(caps.layers) <= set(registry.layers.names()), "declares unregistered layer types"
    assert "32" in caps.precisions and set(caps.precisions) <= PRECISIONS
    assert "cpu" in caps.accelerators and set(caps.accelerators) <= ACCELERATORS
    assert caps.optimizers is None or (caps.optimizers and set(caps.optimizers) <= OPTIMIZERS)
    if caps.losses is not None:
        assert caps.losses and set(caps.losses) <= set(registry.losses.names())


def test_capabilities_import_no_framework(ct_target):
    code = (
        "import json, sys\n"
        "from crosstrain.plugin.registry import get_registry\n"
        f"backend = get_registry().backend({ct_target.name!r})\n"
        "backend.capabilities(); backend.is_available(); backend.version()\n"
        f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == [], f"declaring capabilities imported {imported}"


def test_undeclared_layer_is_refused_at_build(ct_target):
    undeclared = sorted(
        name
        for name in {"Dense", "Conv2D", "LayerNorm", "GELU", "Sigmoid", "Flatten"}
        if name not in ct_target.caps.layers
    )
    if not undeclared:
        pytest.skip(f"{ct_target.name} declares every layer this test could use")
    options = {"Dense": {"units": 2}, "Conv2D": {"filters": 2, "kernel_size": 1}}
    layer = {"type": undeclared[0], **options.get(undeclared[0], {})}
    shape = (4, 4, 2) if layer["type"] == "Conv2D" else (4,)
    with pytest.raises(UnsupportedFeature) as err:
        ct_target.build(spec([layer], shape))
    assert layer["type"] in str(err.value)


@pytest.mark.parametrize("kind", ["optimizer", "precision"])
def test_undeclared_option_is_refused_at_build(ct_target, kind):
    ct_target.require_layers({"Dense"})
    known, declared = {
        "optimizer": (OPTIMIZERS, ct_target.caps.optimizers or OPTIMIZERS),
        "precision": (PRECISIONS, ct_target.caps.precisions),
    }[kind]
    missing = sorted(known - set(declared))
    if not missing:
        pytest.skip(f"{ct_target.name} declares every {kind}")
    data = spec([{"type": "Dense", "units": 2}], (3,))
    if kind == "optimizer":
        data["optimizer"] = {"name": missing[0]}
    else:
        data["trainer"]["precision"] = missing[0]
    with pytest.raises(UnsupportedFeature) as err:
        ct_target.build(data)
    assert missing[0] in str(err.value)
