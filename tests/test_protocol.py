"""The Backend and Program base classes: defaults of the optional members, every built-in
subclasses them, and a third-party object that does not subclass is wrapped (every required
member present) or refused at registration with the members it lacks."""

from __future__ import annotations

import importlib
import json
import textwrap

import numpy as np
import pytest
from conftest import run_python, tiny_spec
from crosstrain.errors import PluginError, UnsupportedFeature
from crosstrain.plugin.protocol import Backend, Capabilities, Program
from crosstrain.plugin.protocol_wrap import WrappedBackend, WrappedProgram, as_backend, as_program
from test_registry import make_distribution


class MinimalProgram(Program):
    """Only the abstract members."""

    native_model = {"w": np.zeros(2)}

    def train_step(self, batch):
        return {"loss": 1.0}

    def eval_step(self, batch):
        return {"loss": 1.0}

    def predict_step(self, batch):
        return np.zeros((len(batch[0]), 1))

    def metrics_to_host(self, outputs):
        return {"loss": 1.0}

    def get_state(self):
        raise NotImplementedError

    def set_state(self, state):
        raise NotImplementedError


def test_program_defaults_are_single_process_numpy():
    program = MinimalProgram()
    assert program.array_kind == "numpy" and program.world_size == 1
    assert program.collective_state is False
    assert program.cache_data(np.zeros((4, 2)), np.zeros(4)) is None
    assert program.any_rank(True) is True and program.any_rank(False) is False
    with pytest.raises(UnsupportedFeature, match="export to 'onnx'"):
        program.export("model.onnx", "onnx")
    with pytest.raises(NotImplementedError, match="train_steps"):
        program.train_steps((np.zeros((2, 4, 2)), np.zeros((2, 4))))


def test_a_subclass_missing_an_abstract_member_cannot_be_made():
    class NoSteps(Program):
        pass

    with pytest.raises(TypeError, match="train_step"):
        NoSteps()


def test_backend_defaults():
    class Tiny(Backend):
        name, extra = "tiny", "tiny"

        def is_available(self):
            return True, ""

        def version(self):
            return None

        def capabilities(self):
            return Capabilities(layers=frozenset({"Dense"}))

        def accelerators_found(self):
            return ["cpu"]

        def build(self, spec, env):
            return MinimalProgram()

    backend = Tiny()
    assert backend.note == "" and backend.accelerator_details() == []
    assert backend.launch(None, []) is None  # type: ignore[arg-type]
    assert as_backend(backend) is backend


@pytest.mark.parametrize("name", ["torch", "jax", "keras"])
def test_builtin_backends_subclass_the_protocol(name):
    from crosstrain.plugin.registry import get_registry

    backend = get_registry().backend(name)
    assert isinstance(backend, Backend) and not isinstance(backend, WrappedBackend)
    module, cls = {
        "torch": ("crosstrain.backends.torch.program", "TorchProgram"),
        "jax": ("crosstrain.backends.jax.program", "JaxProgram"),
        "keras": ("crosstrain.backends.keras.program", "KerasProgram"),
    }[name]
    if name == "keras":  # Keras fixes its engine on import: check in a fresh process
        done = run_python(
            f"from crosstrain.backends.keras.device import use_engine; use_engine('jax')\n"
            f"from crosstrain.plugin.protocol import Program\nfrom {module} import {cls}\n"
            f"print(issubclass({cls}, Program))"
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "True"
        return
    assert issubclass(getattr(importlib.import_module(module), cls), Program)


def test_a_plain_object_missing_members_is_refused_naming_them():
    class Half:
        name, extra = "half", "half"

        def is_available(self):
            return True, ""

    with pytest.raises(PluginError) as err:
        as_backend(Half())
    message = str(err.value)
    assert "'half'" in message
    for member in ("version", "capabilities", "accelerators_found", "build"):
        assert member in message
    assert "is_available" not in message
    with pytest.raises(PluginError, match="lacks metrics_to_host, get_state, set_state"):
        as_program(MinimalProgramPlain(partial=True), "half")


class MinimalProgramPlain:
    """A program that does not subclass Program (as plugins wrote them before the base class)."""

    def __init__(self, partial: bool = False):
        self.native_model = {}
        self.train_step = self.eval_step = self.predict_step = lambda batch: None
        if not partial:
            self.metrics_to_host = lambda outputs: {}
            self.get_state = self.set_state = lambda *a: None


def test_a_plain_program_is_wrapped_with_defaults():
    wrapped = as_program(MinimalProgramPlain(), "plain")
    assert isinstance(wrapped, WrappedProgram) and isinstance(wrapped, Program)
    assert wrapped.array_kind == "numpy" and wrapped.world_size == 1
    assert wrapped.cache_data(np.zeros(1), np.zeros(1)) is None


PLAIN_BACKEND = """
from crosstrain import hookimpl
from crosstrain.backends.torch.plugin import TorchBackend


class PlainProgram:
    '''Delegates to a torch program, without subclassing crosstrain.plugin.protocol.Program.'''

    array_kind = "torch"

    def __init__(self, inner):
        self.inner = inner
        self.native_model = inner.native_model
        self.calls = 0

    def train_step(self, batch):
        self.calls += 1
        return self.inner.train_step(batch)

    def eval_step(self, batch):
        return self.inner.eval_step(batch)

    def predict_step(self, batch):
        return self.inner.predict_step(batch)

    def metrics_to_host(self, outputs):
        return self.inner.metrics_to_host(outputs)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


class PlainBackend:
    name, extra, note = "plain", "torch", "a duck-typed backend"
    torch = TorchBackend()

    def is_available(self):
        return True, ""

    def version(self):
        return "0.1"

    def capabilities(self):
        return self.torch.capabilities()

    def accelerators_found(self):
        return ["cpu"]

    def build(self, spec, env):
        return PlainProgram(self.torch.build(spec, env))


@hookimpl
def crosstrain_add_backends():
    return [PlainBackend()]
"""

HALF_BACKEND = """
from crosstrain import hookimpl


class HalfBackend:
    name, extra = "half", "half"

    def is_available(self):
        return True, ""


@hookimpl
def crosstrain_add_backends():
    return [HalfBackend()]
"""


def test_third_party_backends_are_wrapped_or_reported_broken(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "ct_plain", PLAIN_BACKEND)
    make_distribution(site, "ct_half", HALF_BACKEND)
    code = textwrap.dedent(f"""
        import json, crosstrain as ct
        from crosstrain.plugin.registry import get_registry
        registry = get_registry()
        backend = registry.backend("plain")
        program = ct.build({tiny_spec()!r}, backend="plain")
        result = ct.fit({tiny_spec()!r}, backend="plain", run_dir=False)
        print(json.dumps({{
            "broken": {{b.name: b.error for b in registry.broken}},
            "backends": registry.backends.names(),
            "wrapped": type(backend).__name__, "note": backend.note,
            "program": type(program).__name__, "kind": program.array_kind,
            "acc": result.metrics["val_accuracy"],
        }}))
    """)
    done = run_python(code, env={"PYTHONPATH": str(site)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "half" not in report["backends"] and "plain" in report["backends"]
    assert "lacks version, capabilities, accelerators_found, build" in report["broken"]["ct_half"]
    assert report["wrapped"] == "WrappedBackend" and report["note"] == "a duck-typed backend"
    assert report["program"] == "WrappedProgram" and report["kind"] == "torch"
    assert 0.0 <= report["acc"] <= 1.0
