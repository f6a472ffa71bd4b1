"""`TorchBackend`: what the torch backend declares, and `build`. Imports torch only in `build`
and `accelerators_found`."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from crosstrain.errors import BackendUnavailable, SpecError, SpecIssue, UnsupportedFeature
from crosstrain.nn.layers import layer_route, supported_layer_types
from crosstrain.plugin.protocol import Backend, Capabilities, RunEnv
from crosstrain.plugin.registry import package_version

from .export import FORMATS as EXPORT_FORMATS

if TYPE_CHECKING:
    from crosstrain.spec.schema import Spec

    from .program import TorchProgram

LAYER_BUILDERS: dict[str, str] = {
    "Dense": "Dense",
    "Conv1D": "Conv1D",
    "Conv2D": "Conv2D",
    "MaxPool2D": "Pool2D",
    "AvgPool2D": "Pool2D",
    "GlobalAvgPool": "GlobalAvgPool",
    "BatchNorm": "BatchNorm",
    "LayerNorm": "LayerNorm",
    "Dropout": "Dropout",
    "Embedding": "Embedding",
    "Flatten": "Reshape",
    "Reshape": "Reshape",
    "ReLU": "Activation",
    "GELU": "sequence.GELU",
    "SiLU": "Activation",
    "Tanh": "Activation",
    "Sigmoid": "Activation",
    "Softmax": "Activation",
    "MultiHeadSelfAttention": "sequence.Attention",
    "PositionEmbedding": "sequence.PositionEmbedding",
    "RMSNorm": "sequence.RMSNorm",
    "GatedMLP": "sequence.GatedMLP",
    "LSTM": "recurrent.LSTM",
    "GRU": "recurrent.GRU",
    "MaxPool1D": "pooling.Pool1D",
    "AvgPool1D": "pooling.Pool1D",
    "GlobalMaxPool": "pooling.GlobalMaxPool",
    "UpSampling2D": "pooling.UpSampling2D",
    "Conv2DTranspose": "pooling.Conv2DTranspose",
    "Sequential": "Sequential",
    "Residual": "Residual",
    "Add": "graph.Merge",
    "Concatenate": "graph.Merge",
    "Multiply": "graph.Merge",
}
"""The torch backend's layer table: layer type → its `nn.Module` class in `layers.py`
(`module.Class`: in that module of this package).

The supported layer types are these keys plus every registered layer with a `torch_module`
method or an array-API `forward` (`crosstrain.nn.layers.layer_route`)."""
NATIVE_METHOD = "torch_module"
PRECISIONS = frozenset({"32", "64", "16-mixed", "bf16-mixed", "bf16-true"})
ACCELERATORS = frozenset({"cpu", "cuda", "mps", "tpu"})
STRATEGIES = frozenset({"auto", "ddp", "fsdp"})


class TorchBackend(Backend):
    """The PyTorch reference backend (`backend="torch"`)."""

    name = "torch"
    extra = "torch"

    def is_available(self) -> tuple[bool, str]:
        """Whether torch can be imported (checked without importing it)."""
        if importlib.util.find_spec("torch") is None:
            return False, "torch is not installed"
        return True, ""

    def version(self) -> str | None:
        """torch's version from package metadata."""
        return package_version("torch")

    def capabilities(self) -> Capabilities:
        """Every layer of `LAYER_BUILDERS`, every array-API or `torch_module` layer, five
        precisions, four accelerators, every optimizer, `torch.compile`, native models."""
        return Capabilities(
            lr_scale=True,
            layers=supported_layer_types(LAYER_BUILDERS, NATIVE_METHOD),
            precisions=PRECISIONS,
            accelerators=ACCELERATORS,
            strategies=STRATEGIES,
            steps_per_execution=False,
            accumulate_grad_batches=True,
            compile=True,
            native_models=True,
            grad_norm=True,
            exports=EXPORT_FORMATS,
            shared_dropout_masks=True,
        )

    def accelerators_found(self) -> list[str]:
        """`cpu`, plus `cuda`, `mps` and `tpu` where usable (imports torch)."""
        from .device import found_accelerators

        return found_accelerators()

    def accelerator_details(self) -> list[tuple[str, str, list[str]]]:
        """`(accelerator, device names, precisions)` for each accelerator found (imports torch)."""
        from .device import describe_accelerators

        return describe_accelerators()

    def launch(self, spec: Spec, argv: list[str], backend: str = "") -> int | None:
        """Starts `crosstrain <argv>` in `trainer.devices` processes through torchrun when the
        spec asks for several devices (strategy `auto` means `ddp` then) and no launcher
        started this process.

        Returns:
            The workers' exit status, or None when this process should train by itself.
        """
        from crosstrain.train.workers import launcher_environment

        t = spec.trainer
        if t.devices == 1 or launcher_environment() is not None:
            return None
        from .distributed import launch

        return launch(t.devices, argv)

    def check(self, spec: Spec, env: RunEnv) -> None:
        """Raises UnsupportedFeature (or SpecError) for anything this backend cannot run.

        The spec is checked against `capabilities()`, then the run environment (which command
        line flags may have changed). Needs no torch import, so it fails before torch loads.
        """
        self.capabilities().check(spec, self.name)
        if env.strategy not in STRATEGIES:
            raise UnsupportedFeature(self.name, f"strategy {env.strategy!r}", sorted(STRATEGIES))
        if (env.strategy != "auto" or env.devices > 1) and env.accelerator in ("mps", "tpu"):
            raise UnsupportedFeature(
                self.name,
                f"devices={env.devices}, strategy {env.strategy!r} on {env.accelerator}",
                ["one device", "ddp or fsdp on cpu or cuda"],
            )
        if env.strategy == "fsdp" and env.precision == "16-mixed":
            raise UnsupportedFeature(
                self.name, "precision '16-mixed' with strategy 'fsdp'", ["bf16-mixed", "32"]
            )
        if env.precision not in PRECISIONS:
            raise UnsupportedFeature(self.name, f"precision {env.precision!r}", sorted(PRECISIONS))
        if env.accelerator != "auto" and env.accelerator not in ACCELERATORS:
            raise UnsupportedFeature(
                self.name, f"accelerator {env.accelerator!r}", sorted(ACCELERATORS)
            )
        if env.native_model is not None:
            return
        if spec.model is None:
            raise SpecError(
                SpecIssue("model", "no model: give model in the spec or pass a torch.nn.Module")
            )
        from crosstrain.nn.model import plan, walk

        for node in walk(plan(spec.model)):
            if layer_route(node.layer, LAYER_BUILDERS, NATIVE_METHOD) is None:
                raise UnsupportedFeature(
                    self.name,
                    f"layer type {node.layer.type!r} at {node.path} (no torch_module and "
                    "no array-API forward)",
                    sorted(LAYER_BUILDERS),
                )

    def explain(self, spec: Spec, env: RunEnv) -> dict[str, str]:
        """Its lines of the fit plan (`crosstrain fit --explain`), from `explain.py`."""
        from .explain import explain

        return explain(spec, env)

    def build(self, spec: Spec, env: RunEnv) -> TorchProgram:
        """A `TorchProgram` for the spec (or for `env.native_model`, an `nn.Module`).

        Raises:
            BackendUnavailable: torch is not installed.
            UnsupportedFeature: the spec asks for something listed as unsupported above.
        """
        available, reason = self.is_available()
        if not available:
            raise BackendUnavailable(self.name, reason, self.extra)
        self.check(spec, env)
        from .program import TorchProgram

        return TorchProgram(spec, env, self.name)
