"""`ArrayLayer`: a layer written once against the array API, as a Keras 3 layer (any engine).

The weights are created in `params()` order, as `model.py` expects of any plugin Keras layer,
named after the canonical parameters (`/` written as `__`, which Keras forbids). The forward is
the layer's own `forward` called with the namespace of the engine's tensors (`xp.namespace`:
`jax.numpy`, torch through `array_api_compat`, `keras.ops` on tensorflow), inside the backend's
compiled step.
"""

from __future__ import annotations

from typing import Any

import keras
from crosstrain.nn.layers import Layer, Shape

from .xp import namespace


@keras.saving.register_keras_serializable(package="crosstrain")
class ArrayLayer(keras.layers.Layer):
    """A crosstrain `Layer` with an array-API `forward`, as a Keras layer.

    Args:
        layer: the crosstrain layer (its `params` and `forward` are all that is used).
        input_shape: the per-sample input shape.
        **options: Keras layer options (`name`, `dtype` policy).
    """

    def __init__(self, layer: Layer, input_shape: Shape, **options: Any):
        super().__init__(**options)
        self.spec, self.sample_shape = layer, tuple(input_shape)
        self.params_by_name: dict[str, Any] = {}

    def build(self, input_shape: Any) -> None:
        for name, spec in self.spec.params(self.sample_shape).items():
            self.params_by_name[name] = self.add_weight(
                name=name.replace("/", "__"),
                shape=tuple(spec.shape),
                initializer="zeros",  # the canonical initial values are written after the build
                trainable=spec.trainable,
            )

    def call(self, x: Any, training: bool | None = None) -> Any:
        floating = keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype))
        params = {
            name: keras.ops.cast(variable, x.dtype) if floating else variable.value
            for name, variable in self.params_by_name.items()
        }
        return self.spec.forward(namespace(x), params, x, bool(training), None)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], *self.spec.output_shape(tuple(input_shape[1:])))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "layer": self.spec.model_dump(mode="json"),
            "input_shape": list(self.sample_shape),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ArrayLayer:
        from crosstrain.nn.layers.composite import validate_layer

        layer = validate_layer(config.pop("layer"))
        return cls(layer, tuple(config.pop("input_shape")), **config)
