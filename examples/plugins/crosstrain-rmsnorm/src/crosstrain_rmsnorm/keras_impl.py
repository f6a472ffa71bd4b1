"""RMSNorm as a Keras 3 layer (imported only by the Keras backend, on any engine)."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="crosstrain_rmsnorm")
class KerasRMSNorm(keras.layers.Layer):
    """RMSNorm over the last axis with one weight, `scale`."""

    def __init__(self, epsilon: float = 1e-6, **kwargs: Any):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x: Any) -> Any:
        ms = keras.ops.mean(x * x, axis=-1, keepdims=True)
        return x * keras.ops.rsqrt(ms + self.epsilon) * keras.ops.cast(self.scale, x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}
