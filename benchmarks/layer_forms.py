"""A layer written once (array-API `forward`) against the same layer with native classes.

The model is an MLP with two RMSNorm layers (64-256-RMSNorm-ReLU-256-RMSNorm-ReLU-10, batch
128). `ArrayRMSNorm` has only `params` and an array-API `forward`, which each backend wraps in
its generic module (`backends/<name>/array_layer.py`); `NativeRMSNorm` is the same layer with a
`torch_module`, `jax_module` and `keras_layer` (the speed-up a plugin may add). How it is timed:
`spec_variants.py`.

    python -m benchmarks.layer_forms [--backends torch,jax,keras:jax] [--repeats 3]
"""

from __future__ import annotations

from typing import Any, Literal

from crosstrain.nn.layers import Layer, ParamSpec, Shape
from pydantic import Field

from .spec_variants import BATCH, Comparison, EpochTimer, main, trainer_options

__all__ = ["COMPARISON", "ArrayRMSNorm", "EpochTimer", "NativeRMSNorm"]


class ArrayRMSNorm(Layer):
    """RMSNorm written once: `x / sqrt(mean(x**2) + epsilon) * scale` against the array API."""

    type: Literal["ArrayRMSNorm"] = "ArrayRMSNorm"
    epsilon: float = Field(1e-6, gt=0.0)

    def params(self, input_shape: Shape) -> dict[str, ParamSpec]:
        return {"scale": ParamSpec((input_shape[-1],), "ones")}

    def forward(self, xp, params, x, training=False, rng=None):
        ms = xp.mean(x * x, axis=-1, keepdims=True)
        return x / xp.sqrt(ms + self.epsilon) * params["scale"]


class NativeRMSNorm(ArrayRMSNorm):
    """The same layer with one native class per backend, which every backend prefers."""

    type: Literal["NativeRMSNorm"] = "NativeRMSNorm"  # type: ignore[assignment]

    def torch_module(self, input_shape: Shape) -> Any:
        import torch

        class TorchRMSNorm(torch.nn.Module):
            def __init__(self, features: int, epsilon: float):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.ones(features))
                self.epsilon = epsilon

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                ms = x.pow(2).mean(-1, keepdim=True)
                return x * torch.rsqrt(ms + self.epsilon) * self.scale

        return TorchRMSNorm(input_shape[-1], self.epsilon)

    def jax_module(self, input_shape: Shape) -> Any:
        import jax
        import jax.numpy as jnp
        from flax import nnx

        class JaxRMSNorm(nnx.Module):
            def __init__(self, features: int, epsilon: float):
                self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
                self.epsilon = epsilon

            def __call__(self, x: jax.Array) -> jax.Array:
                ms = jnp.mean(x * x, axis=-1, keepdims=True)
                return x * jax.lax.rsqrt(ms + self.epsilon) * self.scale[...].astype(x.dtype)

        return JaxRMSNorm(input_shape[-1], self.epsilon)

    def keras_layer(self, input_shape: Shape, **options: Any) -> Any:
        import keras

        class KerasRMSNorm(keras.layers.Layer):
            def __init__(self, epsilon: float, **kwargs: Any):
                super().__init__(**kwargs)
                self.epsilon = epsilon

            def build(self, shape: Any) -> None:
                self.scale = self.add_weight(name="scale", shape=(shape[-1],), initializer="ones")

            def call(self, x: Any) -> Any:
                ms = keras.ops.mean(x * x, axis=-1, keepdims=True)
                return x * keras.ops.rsqrt(ms + self.epsilon) * keras.ops.cast(self.scale, x.dtype)

        return KerasRMSNorm(self.epsilon, **options)


def spec(layer_type: str) -> dict[str, Any]:
    norm = {"type": layer_type}
    return {
        "name": f"layer-forms-{layer_type}",
        "seed": 0,
        "model": {
            "input_shape": [64],
            "layers": [
                {"type": "Dense", "units": 256},
                norm,
                {"type": "ReLU"},
                {"type": "Dense", "units": 256},
                norm,
                {"type": "ReLU"},
                {"type": "Dense", "units": 10},
            ],
        },
        "data": {"batch_size": BATCH, "shuffle": False},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 1e-3},
        "trainer": trainer_options(),
    }


def register_layers() -> None:
    """Registers both RMSNorm forms (the worker process's setup)."""
    import crosstrain as ct

    registry = ct.get_registry()
    for cls in (ArrayRMSNorm, NativeRMSNorm):
        if cls.model_fields["type"].default not in registry.layers:
            registry.layers.add(cls)


COMPARISON = Comparison(
    module="benchmarks.layer_forms",
    name="layer-forms",
    title="Array-API layer vs native classes",
    model="a 64-256-RMSNorm-ReLU-256-RMSNorm-ReLU-10 MLP",
    variants=("ArrayRMSNorm", "NativeRMSNorm"),
    labels=("array-API layer", "native classes"),
    spec=spec,
    setup=register_layers,
)

if __name__ == "__main__":
    raise SystemExit(main(COMPARISON))
