"""Hand-written Keras 3 for the benchmark tasks: a functional model, `compile` with Adam and
sparse categorical cross-entropy from logits, `model.fit` (shuffled, silent). The engine is the
one `KERAS_BACKEND` names, set by the worker before the import."""

from __future__ import annotations

import time
from typing import Any

import keras

from .tasks import DIM, HEADS, VOCAB, Task


def make_model(task: Task) -> keras.Model:
    """The task's model as idiomatic Keras (channels-last)."""
    dtype = "int32" if task.vocab else "float32"
    inputs = keras.Input(task.input_shape, batch_size=task.batch, dtype=dtype)
    layers = keras.layers
    if task.key == "D":
        h = layers.Embedding(VOCAB, DIM)(inputs)
        a = layers.LayerNormalization(epsilon=1e-3)(h)
        h = h + layers.MultiHeadAttention(HEADS, DIM // HEADS)(a, a)
        a = layers.LayerNormalization(epsilon=1e-3)(h)
        a = layers.Dense(2 * DIM, activation=keras.activations.gelu)(a)
        h = h + layers.Dense(DIM)(a)
        out = layers.Dense(10)(layers.GlobalAveragePooling1D()(h))
    elif task.key == "C":
        h = layers.Conv2D(16, 3, padding="same")(inputs)
        h = layers.ReLU()(layers.BatchNormalization(momentum=0.9, epsilon=1e-3)(h))
        h = layers.MaxPooling2D(2)(h)
        h = layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        out = layers.Dense(10)(layers.Flatten()(h))
    else:
        h = inputs
        for layer in task.layers:
            h = layers.Dense(layer["units"])(h) if "units" in layer else layers.ReLU()(h)
        out = h
    return keras.Model(inputs, out)


class _Timer(keras.callbacks.Callback):
    def __init__(self, start: float) -> None:
        super().__init__()
        self.start, self.ttfs = start, None
        self.epochs: list[float] = []
        self.cpu: list[float] = []
        self.began = self.began_cpu = 0.0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.began, self.began_cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.epochs.append(time.perf_counter() - self.began)
        self.cpu.append(time.process_time() - self.began_cpu)
        self.last = float(logs["loss"])


def run_native(task: Task) -> dict[str, Any]:
    """`model.fit`; first step = build + compile + `train_on_batch`; returns the epoch times."""
    x, y = task.data()
    if task.vocab:
        x = x.astype("int32")
    start = time.perf_counter()
    model = make_model(task)
    model.compile(
        optimizer=keras.optimizers.Adam(task.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.train_on_batch(x[: task.batch], y[: task.batch])
    ttfs = time.perf_counter() - start
    timer = _Timer(start)
    model.fit(
        x, y, batch_size=task.batch, epochs=task.epochs, shuffle=True, verbose=0, callbacks=[timer]
    )
    return {
        "epoch_s": timer.epochs,
        "epoch_cpu_s": timer.cpu,
        "ttfs_s": ttfs,
        "final_loss": timer.last,
    }
