"""Hook order: a callback sees the lifecycle hooks of a fit in the documented order, with
`logs` on the steps where the trainer pulled metrics."""

from __future__ import annotations

from typing import Any

from crosstrain.conformance.data import classification, spec
from crosstrain.train.callbacks import Callback


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start",))

    def on_epoch_start(self, stage, epoch):
        self.calls.append(("epoch_start", stage, epoch))

    def on_batch_end(self, stage, batch_index, logs):
        self.calls.append(("batch_end", stage, batch_index, logs is not None))

    def on_epoch_end(self, stage, epoch, metrics):
        self.calls.append(("epoch_end", stage, epoch, tuple(sorted(metrics))))

    def on_fit_end(self, result):
        self.calls.append(("fit_end",))


def expected_calls(epochs: int, train_batches: int, val_batches: int, every: int) -> list[tuple]:
    calls: list[tuple] = [("fit_start",)]
    step = 0
    train_keys = ("train_accuracy", "train_loss")
    val_keys = ("val_accuracy", "val_loss")
    for epoch in range(epochs):
        calls.append(("epoch_start", "train", epoch))
        for index in range(train_batches):
            step += 1
            pulled = step % every == 0 or index == train_batches - 1
            calls.append(("batch_end", "train", index, pulled))
        calls.append(("epoch_start", "val", epoch))
        calls += [("batch_end", "val", index, False) for index in range(val_batches)]
        calls.append(("epoch_end", "val", epoch, val_keys))
        calls.append(("epoch_end", "train", epoch, tuple(sorted(train_keys + val_keys))))
    calls.append(("fit_end",))
    return calls


def test_hooks_fire_in_documented_order(ct_target):
    optimizer = ct_target.any_optimizer("sgd", "adam", "rmsprop", "adamw")
    data = spec(
        [{"type": "Dense", "units": 3}],
        (6,),
        loss="cross_entropy",
        metrics=["accuracy"],
        optimizer={"name": optimizer, "lr": 0.01},
        max_epochs=2,
        log_every_n_steps=2,
    )
    data["data"] = {"batch_size": 16}
    ct_target.require_spec(data)
    x, y = classification(samples=64)
    recorder = Recorder()
    ct_target.fit(data, (x[:48], y[:48]), (x[48:], y[48:]), callbacks=[recorder])
    assert recorder.calls == expected_calls(epochs=2, train_batches=3, val_batches=1, every=2)
