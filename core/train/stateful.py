"""`trainer.stateful`: recurrent state carried from one batch to the next (truncated BPTT).

With `stateful: true` (Keras's contract for `stateful=True` layers) row i of batch k+1
continues row i of batch k: the data comes in the order you arranged it (`data.shuffle: false`).
With `stateful: streams` the samples, in their order, are consecutive windows of one sequence
(a `text:` source's windows) and crosstrain arranges them as pytorch/examples'
word_language_model `batchify` does: the sequence is cut into `batch_size` contiguous streams
and row i of every batch reads the next window of stream i (the `N mod batch_size` windows
left over are dropped from training).

Every LSTM and GRU of the model then holds its final hidden (and cell) state of a batch as the
initial state of the next one, detached (no gradient flows into the previous batch). Those
states are non-trainable canonical parameters `<layer>/state_h`, `<layer>/state_c` of shape
`(batch_size, units)` (crosstrain.nn.layers.recurrent), so the checkpoint holds them and a
resume continues exactly. They are set to zeros at the start of each training epoch (not
when a resume continues one) and of each evaluation pass; a validation inside an epoch
(`val_check_interval`) leaves the training state as it found it. A shorter batch (an
evaluation pass's last) uses the first rows of the state. A prediction (`predict`,
`generate`) is stateless: it starts from zeros and leaves the carried state alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from crosstrain.errors import TrainingError


def state_names(spec: Any) -> list[str]:
    """Canonical names of the carried states (empty unless `trainer.stateful`)."""
    if not spec.trainer.stateful or spec.model is None:
        return []
    from crosstrain.nn.model import param_specs

    return [n for n in param_specs(spec.model) if n.rsplit("/", 1)[-1] in ("state_h", "state_c")]


def stream_order(n: int, batch_size: int) -> np.ndarray:
    """Rows of `n` consecutive windows cut into `batch_size` streams, batch after batch."""
    per_stream = n // batch_size
    return np.arange(per_stream * batch_size).reshape(batch_size, per_stream).T.ravel()


def order(trainer: Any, data: Any, order: np.ndarray | None, stage: str) -> np.ndarray | None:
    """The rows of a pass (`stateful: streams` rearranges them); refuses a short last
    training batch under `stateful: true` without `data.drop_last`."""
    spec = trainer.spec
    mode, size = spec.trainer.stateful, spec.data.batch_size
    if not mode or order is None:
        if mode == "streams" and stage == "train" and order is None:
            raise TrainingError(
                "trainer.stateful: streams needs array data (a source of windows); a "
                "streamed source gives its own batches: use stateful: true"
            )
        return order
    if mode == "streams":
        streams = stream_order(len(order), size)
        if stage == "train":
            return order[streams]
        return np.concatenate([order[streams], order[len(streams) :]])
    if stage == "train" and not spec.data.drop_last and len(order) % size:
        raise TrainingError(
            f"trainer.stateful: {len(order)} training samples leave a last batch of "
            f"{len(order) % size} rows, which cannot continue the {size} streams: set "
            "data.drop_last: true (or stateful: streams)"
        )
    return order


def begin_pass(
    trainer: Any, data: Any, rows: np.ndarray | None, stage: str, first: int
) -> np.ndarray | None:
    """At the start of a pass: its rows (`order`) after the states are reset (`reset`)."""
    rows = order(trainer, data, rows, stage)
    reset(trainer, stage, first)
    return rows


def reset(trainer: Any, stage: str, first: int = 0) -> None:
    """Zeros the carried states at the start of a pass (a training epoch resumed mid-way,
    `first > 0`, keeps the checkpoint's)."""
    names = getattr(trainer, "_state_names", None)
    if names is None:
        names = trainer._state_names = state_names(trainer.spec)
    if not names or (stage == "train" and first > 0):
        return
    zero = getattr(trainer.program, "zero_params", None)  # a program's own, on its device
    if zero is not None:
        return zero(names)
    state = trainer.program.get_state()
    for name in names:
        state.params[name] = np.zeros_like(state.params[name])
    trainer.program.set_state(state)


@contextmanager
def kept(trainer: Any) -> Iterator[None]:
    """Around a validation pass: the training state afterwards is the one before."""
    names = getattr(trainer, "_state_names", None) or state_names(trainer.spec)
    saved = None
    if names:
        params = trainer.program.get_state().params
        saved = {n: params[n] for n in names}
    yield
    if saved:
        state = trainer.program.get_state()
        state.params.update(saved)
        trainer.program.set_state(state)
