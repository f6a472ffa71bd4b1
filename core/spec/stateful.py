"""`trainer.stateful` as the spec sees it: the recurrent layers of a model, the batch size their
carried state takes, and the reasons a stateful spec cannot run (crosstrain.train.stateful
carries the state during a fit)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

RECURRENT = ("LSTM", "GRU")


def _recurrent_layers(layers: Any) -> Iterator[Any]:
    for layer in layers:
        if getattr(layer, "type", None) in RECURRENT:
            yield layer
        yield from _recurrent_layers(layer.children())


def _model_layers(model: Any) -> list[Any]:
    """The layers of a chain (`layers:`) or of a graph's nodes (`nodes:`)."""
    if model.layers is not None:
        return list(model.layers)
    return [node.layer for node in model.nodes or () if node.layer is not None]


def attach(spec: Any) -> None:
    """Sets the state's batch size on every recurrent layer of a stateful spec (validation)."""
    if spec.trainer.stateful and spec.model is not None:
        for layer in _recurrent_layers(_model_layers(spec.model)):
            layer.carry_state(spec.data.batch_size)


def spec_issues(spec: Any) -> list[tuple[str, str]]:
    """`(path, message)` for each reason a stateful spec cannot run."""
    mode = spec.trainer.stateful
    if not mode:
        return []
    issues = []
    if spec.model is not None and not any(_recurrent_layers(_model_layers(spec.model))):
        issues.append(("trainer.stateful", "the model has no LSTM or GRU whose state to carry"))
    if spec.data.shuffle:
        issues.append(
            (
                "data.shuffle",
                f"trainer.stateful: {str(mode).lower()} needs data.shuffle: false (row i of "
                "batch k+1 continues row i of batch k; a shuffled order breaks the streams)",
            )
        )
    size = spec.data.eval_batch_size
    if size is not None and size != spec.data.batch_size:
        issues.append(
            (
                "data.eval_batch_size",
                f"trainer.stateful: the state has data.batch_size ({spec.data.batch_size}) "
                f"rows; evaluation batches of {size} do not continue it (leave it unset)",
            )
        )
    if spec.trainer.devices > 1:
        issues.append(("trainer.devices", "trainer.stateful runs on one device"))
    return issues
