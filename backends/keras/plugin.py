"""`KerasBackend`: what the Keras backend declares, and `build` (where Keras is first imported)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from crosstrain.errors import BackendUnavailable, UnsupportedFeature
from crosstrain.nn.layers import supported_layer_types
from crosstrain.plugin.protocol import Backend, Capabilities, RunEnv
from crosstrain.plugin.registry import package_version

from .device import ENGINES, PRECISIONS, engine_available, engine_of
from .export import FORMATS as EXPORT_FORMATS

if TYPE_CHECKING:
    from crosstrain.spec.schema import Spec

    from .program import KerasProgram

LAYER_BUILDERS: dict[str, str] = {
    "Dense": "dense",
    "Conv1D": "conv",
    "Conv2D": "conv",
    "MaxPool2D": "pool",
    "AvgPool2D": "pool",
    "GlobalAvgPool": "global_pool",
    "BatchNorm": "batch_norm",
    "LayerNorm": "layer_norm",
    "Dropout": "dropout",
    "Embedding": "embedding",
    "Flatten": "flatten",
    "Reshape": "reshape",
    "ReLU": "activation",
    "GELU": "sequence.gelu",
    "SiLU": "activation",
    "Tanh": "activation",
    "Sigmoid": "activation",
    "Softmax": "activation",
    "Residual": "residual",
    "Add": "graph.merge",
    "Concatenate": "graph.merge",
    "Multiply": "graph.merge",
    "Sequential": "sequential",
    "MultiHeadSelfAttention": "sequence.attention",
    "RMSNorm": "sequence.rms_norm",
    "GatedMLP": "sequence.gated_mlp",
    "LSTM": "recurrent.recurrent",
    "GRU": "recurrent.recurrent",
    "MaxPool1D": "pooling.pool_1d",
    "AvgPool1D": "pooling.pool_1d",
    "GlobalMaxPool": "pooling.global_max_pool",
    "UpSampling2D": "pooling.upsampling",
    "Conv2DTranspose": "conv",
}
"""The Keras backend's layer table: layer type → its builder function in `model.py`
(`module.function`: in that module of this package).

The supported layer types are these keys plus every registered layer with a `keras_layer`
method or an array-API `forward` (`crosstrain.nn.layers.layer_route`)."""
NATIVE_METHOD = "keras_layer"
SPEED_NOTE = (
    "keras:jax is the fastest engine for small models (jitted stateless steps: 0.23 ms/step for a "
    "64-128-128-10 MLP on CPU, vs 1.2 ms on keras:tensorflow and 2.6 ms on keras:torch, which "
    "runs eagerly); on large matmul-bound models jax and tensorflow are even and torch is about "
    "1.3x slower on CPU. trainer.steps_per_execution > 1 helps jax and tensorflow most "
    "(benchmarks/results/keras.md)."
)


class KerasBackend(Backend):
    """The Keras 3 backend (`keras`, `keras:tensorflow`, `keras:jax`, `keras:torch`).

    See `crosstrain.plugin.protocol.Backend`. The engine comes from the backend name the run asks for
    (`env.backend`); data parallel (`devices > 1`) runs on the jax engine only.
    """

    name = "keras"
    extra = "keras"
    note = SPEED_NOTE

    def is_available(self) -> tuple[bool, str]:
        """Whether keras and at least one engine can be imported (checked without importing)."""
        if importlib.util.find_spec("keras") is None:
            return False, "keras is not installed"
        if not any(importlib.util.find_spec(engine) is not None for engine in ENGINES):
            return False, f"keras needs one of {', '.join(ENGINES)}; none is installed"
        return True, ""

    def version(self) -> str | None:
        """keras's version from package metadata."""
        return package_version("keras")

    def engines(self) -> dict[str, bool]:
        """Each engine and whether it is installed (no import)."""
        return {engine: engine_available(engine)[0] for engine in ENGINES}

    def capabilities(self) -> Capabilities:
        """Every layer of `LAYER_BUILDERS`, every array-API or `keras_layer` layer, fp32 and
        mixed precision, CPU/CUDA, data parallel (jax engine), fused steps, XLA compilation."""
        return Capabilities(
            lr_scale=True,
            layers=supported_layer_types(LAYER_BUILDERS, NATIVE_METHOD),
            precisions=frozenset(PRECISIONS),
            accelerators=frozenset({"cpu", "cuda"}),
            strategies=frozenset({"auto", "data_parallel"}),
            steps_per_execution=True,
            accumulate_grad_batches=True,
            compile=True,
            native_models=False,
            grad_norm=True,
            exports=EXPORT_FORMATS,
            shared_dropout_masks=True,
        )

    def accelerators_found(self) -> list[str]:
        """Accelerators the default engine sees (imports Keras on that engine)."""
        from .device import found_accelerators

        return found_accelerators(engine_of(self.name))

    def launch(self, spec: Spec, argv: list[str], backend: str = "") -> int | None:
        """keras:jax on several CPU devices: one process per device joined by
        `jax.distributed`, started exactly as the jax backend starts its own
        (`JaxBackend.launch`); None on the other engines and when this process trains alone."""
        if engine_of(backend or self.name) != "jax":
            return None
        from crosstrain.backends.jax.plugin import JaxBackend

        return JaxBackend().launch(spec, argv, backend)

    def explain(self, spec: Spec, env: RunEnv) -> dict[str, str]:
        """Its lines of the fit plan (`crosstrain fit --explain`), from `explain.py`."""
        from .explain import explain

        return explain(spec, env)

    def build(self, spec: Spec, env: RunEnv) -> KerasProgram:
        """A KerasProgram for the spec on the engine named in `env.backend`.

        Raises:
            UnsupportedFeature: something not in `capabilities()`, a native model, or a request
                the chosen engine cannot serve (several devices off jax, compile on torch).
            BackendUnavailable: keras or the engine's framework is missing.
            EngineConflict: Keras is already imported here with another engine.
        """
        backend = env.backend or self.name
        if env.native_model is not None:
            raise UnsupportedFeature(backend, "native models (fit(native_model, ...))")
        self.capabilities().check(spec, backend)
        if env.precision not in PRECISIONS:
            raise UnsupportedFeature(backend, f"precision {env.precision!r}", sorted(PRECISIONS))
        engine = engine_of(backend)
        if env.devices > 1 and engine != "jax":
            raise UnsupportedFeature(
                f"keras:{engine}",
                f"devices={env.devices} (data parallel runs on keras:jax)",
                ["devices=1"],
            )
        if env.report_grad_norm and PRECISIONS[env.precision].loss_scaling:
            raise UnsupportedFeature(f"keras:{engine}", "the grad_norm callback with 16-mixed")
        if spec.trainer.compile and engine == "torch":
            raise UnsupportedFeature(
                f"keras:{engine}", "trainer.compile (XLA, on keras:jax and keras:tensorflow)"
            )
        available, reason = engine_available(engine)
        if not available:
            raise BackendUnavailable(f"keras:{engine}", reason, engine)
        if engine == "jax" and env.devices > 1:  # before Keras starts JAX's backends
            from crosstrain.backends.jax.device import maybe_initialize_distributed

            maybe_initialize_distributed()
        from .device import use_engine

        use_engine(engine)
        from .program import KerasProgram

        return KerasProgram(spec, env, engine)
