"""jax and keras:jax sides of `benchmarks.layers`: crosstrain's nnx module (or Keras model) of
each case against flax nnx's own layer (or the stock Keras layer), each step one jitted
`value_and_grad` of `sum(y * g)` with respect to the parameters and the (float) input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .layers import CASES, PARAMETER_FREE, TOKENS, VOCAB, inputs, spec

SYNC = jax.block_until_ready


def _flax(name: str) -> tuple[Any, Callable[[Any, Any], Any], str]:
    """flax's layer of a case: (module or None, `forward(module, x)`, its name)."""
    r = nnx.Rngs(0)
    call = lambda m, x: m(x)  # noqa: E731
    modules = {
        "dense": lambda: (nnx.Linear(128, 128, rngs=r), "nnx.Linear"),
        "conv1d": lambda: (nnx.Conv(128, 128, (3,), padding="SAME", rngs=r), "nnx.Conv"),
        "conv2d": lambda: (nnx.Conv(16, 16, (3, 3), padding="SAME", rngs=r), "nnx.Conv"),
        "conv2d_transpose": lambda: (
            nnx.ConvTranspose(16, 16, (3, 3), strides=(2, 2), padding="VALID", rngs=r),
            "nnx.ConvTranspose",
        ),
        "batchnorm": lambda: (
            nnx.BatchNorm(16, use_running_average=False, epsilon=1e-3, rngs=r),
            "nnx.BatchNorm",
        ),
        "layernorm": lambda: (nnx.LayerNorm(128, epsilon=1e-3, rngs=r), "nnx.LayerNorm"),
        "rmsnorm": lambda: (nnx.RMSNorm(128, epsilon=1e-6, rngs=r), "nnx.RMSNorm"),
        "attention": lambda: (
            nnx.MultiHeadAttention(4, 128, qkv_features=128, decode=False, rngs=r),
            "nnx.MultiHeadAttention",
        ),
        "lstm": lambda: (nnx.RNN(nnx.LSTMCell(128, 128, rngs=r)), "nnx.RNN(nnx.LSTMCell)"),
        "gru": lambda: (nnx.RNN(nnx.GRUCell(128, 128, rngs=r)), "nnx.RNN(nnx.GRUCell)"),
        "embedding": lambda: (nnx.Embed(VOCAB, 128, rngs=r), "nnx.Embed"),
    }
    if name in modules:
        module, label = modules[name]()
        return module, call, label
    functions = {
        "maxpool2d": (lambda m, x: nnx.max_pool(x, (2, 2), (2, 2)), "nnx.max_pool"),
        "avgpool2d": (lambda m, x: nnx.avg_pool(x, (2, 2), (2, 2)), "nnx.avg_pool"),
        "gelu": (lambda m, x: jax.nn.gelu(x, approximate=False), "jax.nn.gelu"),
    }
    return None, *functions[name]


def _jitted(loss: Callable[..., Any], params: Any, fixed: Any, x: Any) -> Callable[[], Any]:
    """The step `value_and_grad(sum(loss(params, fixed, x) * g))` (a fixed random `g`), jitted,
    with respect to `params` and a float `x`."""
    shape = jax.eval_shape(loss, params, fixed, x).shape
    g = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    argnums = 0 if x.dtype.kind == "i" else (0, 2)
    grad = jax.value_and_grad(lambda p, f, x: jnp.sum(loss(p, f, x) * g), argnums=argnums)
    step = jax.jit(grad)
    return lambda: step(params, fixed, x)


def _nnx_step(module: Any, forward: Callable[[Any, Any], Any], x: Any) -> Callable[[], Any]:
    if module is None:
        graphdef, params, rest = None, {}, None
    else:
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)  # plain arrays

    def loss(params: Any, rest: Any, x: Any) -> Any:
        m = None if graphdef is None else nnx.merge(graphdef, params, rest)
        return forward(m, x)

    return _jitted(loss, params, rest, x)


def nnx_steps(name: str) -> tuple[dict[str, Callable[[], Any]], str]:
    """The crosstrain and flax steps of a case, and flax's layer name."""
    import crosstrain as ct

    x = jnp.asarray(inputs(name).astype(np.int32) if name in TOKENS else inputs(name))
    ours = ct.build(spec(name), backend="jax").native_model
    if name in PARAMETER_FREE:
        ours = ours.layers[ours.order[0]]
    module, forward, label = _flax(name)
    pair = {
        "crosstrain": _nnx_step(ours, lambda m, x: m(x, train=True), x),
        "native": _nnx_step(module, forward, x),
    }
    return pair, label


def _keras_layer(name: str) -> tuple[Callable[[Any], Any], str]:
    """Keras's own layer of a case, applied to a symbolic input, and its name."""
    import keras
    from keras import layers

    made = {
        "dense": lambda: layers.Dense(128),
        "conv1d": lambda: layers.Conv1D(128, 3, padding="same"),
        "conv2d": lambda: layers.Conv2D(16, 3, padding="same"),
        "conv2d_transpose": lambda: layers.Conv2DTranspose(16, 3, strides=2),
        "batchnorm": lambda: layers.BatchNormalization(epsilon=1e-3),
        "layernorm": lambda: layers.LayerNormalization(epsilon=1e-3),
        "rmsnorm": lambda: layers.RMSNormalization(epsilon=1e-6),
        "lstm": lambda: layers.LSTM(128, return_sequences=True),
        "gru": lambda: layers.GRU(128, return_sequences=True),
        "embedding": lambda: layers.Embedding(VOCAB, 128),
        "maxpool2d": lambda: layers.MaxPooling2D(2),
        "avgpool2d": lambda: layers.AveragePooling2D(2),
        "gelu": lambda: layers.Activation(keras.activations.gelu),
    }
    if name == "attention":
        mha = layers.MultiHeadAttention(4, 32)
        return lambda x: mha(x, x), "keras.layers.MultiHeadAttention"
    layer = made[name]()
    return layer, f"keras.layers.{type(layer).__name__}"


def _keras_step(model: Any, x: Any) -> Callable[[], Any]:
    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]

    def loss(params: Any, fixed: Any, x: Any) -> Any:
        return model.stateless_call(params, fixed, x, training=True)[0]

    return _jitted(loss, trainable, fixed, x)


def keras_steps(name: str) -> tuple[dict[str, Callable[[], Any]], str]:
    """The crosstrain and stock-Keras steps of a case (keras on jax), and Keras's layer name."""
    import crosstrain as ct
    import keras

    x = jnp.asarray(inputs(name).astype(np.int32) if name in TOKENS else inputs(name))
    ours = ct.build(spec(name), backend="keras").native_model
    if name in PARAMETER_FREE:
        ours = keras.Model(ours.inputs, ours.layers[1].output)
    symbolic = keras.Input(CASES[name][1], dtype="int32" if name in TOKENS else "float32")
    layer, label = _keras_layer(name)
    native = keras.Model(symbolic, layer(symbolic))
    return {"crosstrain": _keras_step(ours, x), "native": _keras_step(native, x)}, label
