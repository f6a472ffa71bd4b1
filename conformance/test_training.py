"""Training: the digits MLP reaches the target validation accuracy in a few epochs through
`crosstrain.fit`, with the history and metric keys the trainer promises."""

from __future__ import annotations

from crosstrain.conformance.data import spec
from crosstrain.conformance.tolerances import TARGET_ACCURACY

EPOCHS = 5


def test_digits_mlp_reaches_target_accuracy(ct_target):
    optimizer = ct_target.any_optimizer("adam", "adamw", "rmsprop", "sgd")
    lr = {"sgd": 0.1}.get(optimizer, 0.01)
    data = spec(
        [{"type": "Dense", "units": 32}, {"type": "ReLU"}, {"type": "Dense", "units": 10}],
        (64,),
        loss="cross_entropy",
        metrics=["accuracy"],
        optimizer={"name": optimizer, "lr": lr},
        max_epochs=EPOCHS,
        log_every_n_steps=10,
    )
    data["data"] = {"source": "sklearn:digits", "validation_split": 0.2, "batch_size": 64}
    ct_target.require_spec(data)
    from crosstrain.api import fit

    result = fit(data, backend=ct_target.name, run_dir=False)
    assert len(result.history) == EPOCHS
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(result.metrics)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    accuracy = result.metrics["val_accuracy"]
    assert accuracy >= TARGET_ACCURACY, f"val_accuracy {accuracy:.3f} < {TARGET_ACCURACY}"
