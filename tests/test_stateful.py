"""`trainer.stateful`: recurrent state carried across windows helps where the label depends on
an earlier window, is reset at each epoch, is checkpointed (a resume continues exactly), and
a spec that cannot keep its streams in order is refused."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import crosstrain as ct
import numpy as np
import pytest
from conftest import call_in_fresh_python
from crosstrain.checkpoint.format import latest_checkpoint, read_checkpoint
from crosstrain.errors import SpecError, TrainingError
from crosstrain.train.stateful import stream_order

KEYS, T, SEGMENT, BATCH = 4, 4, 8, 32
ROOT = Path(__file__).resolve().parent.parent


def key_task(segments: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of T tokens in segments of SEGMENT windows; a segment's first token is its key
    (0..KEYS-1, never elsewhere) and every window's label is the key of its segment: only the
    first window of a segment shows it, the later ones need the state carried to them."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, KEYS, size=segments)
    x = rng.integers(KEYS, 2 * KEYS, size=(segments, SEGMENT, T))
    x[:, 0, 0] = keys
    return x.reshape(-1, T).astype(np.int64), np.repeat(keys, SEGMENT).astype(np.int64)


def key_spec(stateful: bool | str = "streams", kind: str = "LSTM", **trainer: object) -> dict:
    return {
        "name": "stateful",
        "seed": 0,
        "data": {"batch_size": BATCH, "shuffle": False},
        "model": {
            "input_shape": [T],
            "layers": [
                {"type": "Embedding", "vocab_size": 2 * KEYS, "dim": 8},
                {"type": kind, "units": 16},
                {"type": "Dense", "units": KEYS},
            ],
        },
        "loss": "cross_entropy",
        "metrics": ["accuracy"],
        "optimizer": {"name": "adam", "lr": 0.02},
        "trainer": {
            "max_epochs": 8,
            "progress": False,
            "loggers": [],
            "checkpoint": None,
            "stateful": stateful,
            **trainer,
        },
    }


def key_accuracy(backend: str, stateful: bool | str = "streams", kind: str = "LSTM") -> float:
    """Validation accuracy on the key task: 4 segments a stream (so keys change mid-stream)."""
    result = ct.fit(
        key_spec(stateful, kind),
        backend=backend,
        data=key_task(4 * BATCH, 0),
        val_data=key_task(BATCH, 1),
        run_dir=False,
    )
    return float(result.metrics["val_accuracy"])


def test_carried_state_solves_what_windows_alone_cannot() -> None:
    alone, carried = key_accuracy("torch", False), key_accuracy("torch")
    print(f"torch key task: windows alone {alone:.3f}, state carried {carried:.3f}")
    assert alone < 0.4  # the key is seen in 1 window of 8: at best 1/8 + 7/8 * 1/4
    assert carried > alone + 0.25


def test_carried_state_on_jax_and_gru() -> None:
    assert key_accuracy("jax") > 0.55
    assert key_accuracy("torch", kind="GRU") > 0.55


def test_stream_order_is_batchify() -> None:
    # 10 windows, 3 streams of 3 (the 10th is dropped): batch k row i is window 3 i + k
    assert stream_order(10, 3).tolist() == [0, 3, 6, 1, 4, 7, 2, 5, 8]


class _States(ct.Callback):
    """The parameters and carried state after every training batch, by (epoch, batch)."""

    def __init__(self) -> None:
        self.after: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def on_batch_end(self, trainer, stage, batch_index):
        if stage == "train":
            self.after[(trainer.epoch, batch_index)] = trainer.program.get_state().params


def lstm_final_state(spec: ct.Spec, params: dict, x: np.ndarray, initial: tuple) -> tuple:
    """The numpy reference LSTM's final (h, c) on a batch from `initial`."""
    layer = spec.model.layers[1]
    h = params["embedding_0/embeddings"][x].astype(np.float64)
    state = tuple(s.astype(np.float64) for s in initial)
    for t in range(x.shape[1]):
        _, state = layer.step(params_of(params, "lstm_1"), h[:, t], state)
    return state


def params_of(params: dict, layer: str) -> dict:
    return {
        k.split("/", 1)[1]: v.astype(np.float64)
        for k, v in params.items()
        if k.startswith(layer + "/")
    }


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_state_is_carried_within_an_epoch_and_reset_at_the_next(backend: str) -> None:
    spec = ct.load_spec(key_spec(max_epochs=2))
    x, y = key_task(BATCH, 0)  # 8 batches an epoch
    states = _States()
    ct.fit(spec, backend=backend, data=(x, y), run_dir=False, callbacks=[states])
    rows = stream_order(len(x), BATCH).reshape(-1, BATCH)
    zeros = (np.zeros((BATCH, 16)),) * 2
    last_of_first = states.after[(0, 7)]
    h, c = lstm_final_state(spec, last_of_first, x[rows[0]], zeros)  # reset: from zeros
    got = states.after[(1, 0)]
    np.testing.assert_allclose(got["lstm_1/state_h"], h, atol=1e-5)
    np.testing.assert_allclose(got["lstm_1/state_c"], c, atol=1e-5)
    h, c = lstm_final_state(spec, got, x[rows[1]], (h, c))  # carried from batch 0
    np.testing.assert_allclose(states.after[(1, 1)]["lstm_1/state_h"], h, atol=1e-5)
    fresh, _ = lstm_final_state(spec, got, x[rows[1]], zeros)
    assert np.abs(fresh - h).max() > 1e-3  # the carried state made a difference


class _StopAt(ct.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, trainer, stage):
        if stage == "train" and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class _Losses(ct.Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_batch_end(self, trainer, stage, logs):
        if stage == "train" and logs:
            self.losses[trainer.global_step] = logs["train_loss"]


def resume_continues_exactly(backend: str, directory: str) -> bool:
    """Losses and final state of a run cut at step 21 (epoch 1, batch 5) and resumed equal the
    uninterrupted run's; the checkpoint holds a non-zero carried state."""
    tmp_path = Path(directory)
    spec = key_spec(max_epochs=2, log_every_n_steps=1, checkpoint={})
    data = key_task(2 * BATCH, 0)  # 16 steps an epoch
    full_losses, resumed_losses = _Losses(), _Losses()
    full = ct.fit(
        spec, backend=backend, data=data, run_dir=tmp_path / "full", callbacks=[full_losses]
    )
    with pytest.raises(KeyboardInterrupt):
        ct.fit(spec, backend=backend, data=data, run_dir=tmp_path / "cut", callbacks=[_StopAt(21)])
    cut = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    saved = read_checkpoint(cut)[0].params["lstm_1/state_h"]
    assert np.abs(saved).max() > 0  # the carried state is in the checkpoint
    resumed = ct.fit(
        spec,
        backend=backend,
        data=data,
        run_dir=tmp_path / "resumed",
        resume=cut,
        callbacks=[resumed_losses],
    )
    assert sorted(resumed_losses.losses) == list(range(22, 33))
    assert resumed_losses.losses == {s: full_losses.losses[s] for s in range(22, 33)}
    for name, value in full.state.params.items():
        np.testing.assert_array_equal(resumed.state.params[name], value, err_msg=name)
    return True


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_resume_mid_epoch_continues_the_carried_state_exactly(tmp_path, backend: str) -> None:
    assert resume_continues_exactly(backend, str(tmp_path))


def keras_checks(directory: str) -> list:
    """Both checks in one interpreter (Keras's engine is chosen once a process)."""
    return [key_accuracy("keras:jax"), resume_continues_exactly("keras:jax", directory)]


def test_keras_jax_carries_state_and_resumes_exactly(tmp_path) -> None:
    accuracy, resumed = call_in_fresh_python("test_stateful", "keras_checks", str(tmp_path))
    assert accuracy > 0.55
    assert resumed


def test_a_validation_inside_an_epoch_leaves_the_training_state_as_it_was() -> None:
    losses = {}
    for interval in (None, 5):
        recorder = _Losses()
        spec = key_spec(max_epochs=1, log_every_n_steps=1, val_check_interval=interval)
        data, val = key_task(2 * BATCH, 0), key_task(BATCH, 1)
        ct.fit(spec, backend="torch", data=data, val_data=val, run_dir=False, callbacks=[recorder])
        losses[interval] = recorder.losses
    assert len(losses[None]) == 16 and losses[5] == losses[None]


def test_a_spec_that_breaks_the_streams_is_refused() -> None:
    spec = key_spec(True)
    spec["data"]["shuffle"] = True
    with pytest.raises(SpecError, match="data.shuffle: false"):
        ct.load_spec(spec)
    spec = key_spec(True)
    spec["data"]["eval_batch_size"] = 8
    with pytest.raises(SpecError, match="eval_batch_size"):
        ct.load_spec(spec)
    spec = key_spec(True)
    spec["model"]["layers"][1] = {"type": "Dense", "units": 16}
    with pytest.raises(SpecError, match="no LSTM or GRU"):
        ct.load_spec(spec)
    x, y = key_task(BATCH, 0)
    with pytest.raises(TrainingError, match="data.drop_last: true"):
        ct.fit(key_spec(True), backend="torch", data=(x[:-3], y[:-3]), run_dir=False)


def test_lstm_lm_example_trains_statefully_and_generates_the_same_on_torch_and_jax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # its corpus is text:docs
    spec = ct.load_spec(ROOT / "examples" / "lstm_lm.yaml").override(
        {
            "data.batch_size": 4,
            "model.layers[2].units": 32,
            "model.layers[4].units": 32,
            "trainer.max_epochs": 1,
            "trainer.limit_train_batches": 3,
            "trainer.limit_val_batches": 1,
            "trainer.progress": False,
        }
    )
    result = ct.fit(spec, backend="torch", run_dir=tmp_path / "run")
    assert np.isfinite(result.metrics["val_loss"])
    carried = result.state.params["lstm_4/state_c"]
    assert carried.shape == (4, 32) and np.abs(carried).max() > 0
    # a prediction is stateless: greedy text from the checkpoint is the same on both backends
    texts = {
        backend: ct.generate(
            spec,
            tmp_path / "run",
            prompt="The spec",
            max_new_tokens=4,
            temperature=0,
            backend=backend,
        )
        for backend in ("torch", "jax")
    }
    assert texts["torch"] == texts["jax"] and len(texts["torch"]) == 12
