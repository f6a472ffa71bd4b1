"""Streaming data (torch DataLoader/Dataset, tf.data, grain, Python iterables) through the one
loop, zero-copy batch conversion per backend, the npy/csv file sources and a third-party source
installed from examples/plugins/crosstrain-spirals. Every library is the real one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import crosstrain as ct
import numpy as np
import pytest
from conftest import ROOT, tiny_spec
from crosstrain.errors import DataError

BATCH = 32


def stream_spec(**trainer: object) -> dict:
    """The tiny spec without a source or split: data comes from the test; no shuffling, so the
    arrays path visits rows in order like a loader without shuffle."""
    spec = tiny_spec()
    spec["data"] = {"batch_size": BATCH, "shuffle": False}
    spec["trainer"] = {**spec["trainer"], **trainer}
    return spec


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((96, 8)).astype(np.float32), rng.integers(0, 3, 96)


def fit(spec: dict, data: object, backend: str = "torch", **kwargs: object) -> ct.FitResult:
    return ct.fit(spec, backend=backend, data=data, run_dir=False, **kwargs)


def assert_same_params(a: ct.FitResult, b: ct.FitResult) -> None:
    assert a.state.params.keys() == b.state.params.keys()
    for name in a.state.params:
        np.testing.assert_allclose(a.state.params[name], b.state.params[name], rtol=1e-6)


def batches_of(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def test_torch_dataloader_and_dataset_train_like_the_same_arrays(arrays):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = arrays
    spec = stream_spec()
    reference = fit(spec, (x, y))
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loaded = fit(spec, DataLoader(dataset, batch_size=BATCH))
    assert_same_params(reference, loaded)
    assert len(loaded.history) == 2 and loaded.history[-1]["step"] == 6
    batch = torch.from_numpy(x[:4])
    assert loaded.program._inputs(batch) is batch  # the torch backend uses loader tensors as is
    # a map-style Dataset is batched by core in its seeded order: shuffled like the arrays
    shuffled = {**spec, "data": {**spec["data"], "shuffle": True}}
    assert_same_params(fit(shuffled, (x, y)), fit(shuffled, dataset))


def test_jax_backend_takes_torch_batches_through_dlpack_without_a_copy(arrays):
    import torch
    from crosstrain.plugins.data_adapters import TorchAdapter
    from torch.utils.data import DataLoader, TensorDataset

    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    shared = TorchAdapter().convert(tensor, "jax")
    assert shared.unsafe_buffer_pointer() == tensor.data_ptr()  # the same memory
    assert TorchAdapter().convert(tensor, "torch") is tensor
    x, y = arrays
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BATCH)
    spec = stream_spec(max_epochs=1)
    assert_same_params(fit(spec, (x, y), "jax"), fit(spec, loader, "jax"))


def test_tf_data_dataset_trains_like_the_same_arrays(arrays):
    import tensorflow as tf

    x, y = arrays
    spec = stream_spec(max_epochs=1)
    dataset = tf.data.Dataset.from_tensor_slices({"x": x, "y": y}).batch(BATCH)
    assert_same_params(fit(spec, (x, y)), fit(spec, dataset))
    with pytest.raises(DataError, match="repeats forever; set trainer.max_steps"):
        fit(spec, dataset.repeat())
    assert fit(stream_spec(max_steps=4), dataset.repeat()).history[-1]["step"] == 4


def test_grain_map_dataset_trains_like_the_same_arrays(arrays):
    import grain

    x, y = arrays
    spec = stream_spec()
    dataset = grain.MapDataset.source([{"x": x[i], "y": y[i]} for i in range(len(x))]).batch(BATCH)
    assert_same_params(fit(spec, (x, y)), fit(spec, dataset))


class DictBatches:
    """A re-iterable without len(): the trainer counts its batches in the first epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __iter__(self):
        for i in range(0, len(self.x), BATCH):
            yield {"inputs": self.x[i : i + BATCH], "targets": self.y[i : i + BATCH]}


def test_python_iterables_with_and_without_len_and_validation(arrays):
    x, y = arrays
    spec = stream_spec(max_epochs=3)
    reference = fit(spec, (x, y))
    assert_same_params(reference, fit(spec, batches_of(x, y)))
    counted = fit(spec, DictBatches(x, y), val_data=batches_of(x[:40], y[:40]))
    assert_same_params(reference, counted)
    assert [h["step"] for h in counted.history] == [3, 6, 9]
    assert "val_loss" in counted.metrics
    with pytest.raises(DataError, match="cannot be split; pass val_data"):
        fit({**spec, "data": {**spec["data"], "validation_split": 0.2}}, DictBatches(x, y))
    keyed = ct.Batches([{"a": xb, "b": yb} for xb, yb in batches_of(x, y)], x_key="a", y_key="b")
    assert_same_params(reference, fit(spec, keyed))
    with pytest.raises(DataError, match=r"batch 0 is a dict with keys \['a', 'b'\]"):
        fit(spec, [{"a": xb, "b": yb} for xb, yb in batches_of(x, y)])


def test_a_generator_is_refused_for_two_epochs_and_used_for_one(arrays):
    x, y = arrays
    with pytest.raises(DataError, match="one-shot iterator .* trainer.max_epochs is 2"):
        fit(stream_spec(), (b for b in batches_of(x, y)))
    once = fit(stream_spec(max_epochs=1), (b for b in batches_of(x, y)))
    assert once.history[-1]["step"] == 3


def test_resume_mid_epoch_skips_the_batches_already_run(arrays, tmp_path):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = arrays
    spec = stream_spec()
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BATCH)
    whole = fit(spec, loader)

    class StopAtStep4(ct.Callback):
        def on_batch_end(self, trainer):
            if trainer.global_step == 4:
                trainer.interrupted = "SIGINT"

    with pytest.raises(KeyboardInterrupt):
        ct.fit(spec, backend="torch", data=loader, run_dir=tmp_path, callbacks=[StopAtStep4()])
    info = json.loads((tmp_path / "checkpoints" / "step-4" / "trainer.json").read_text())
    assert (info["epoch"], info["batch_in_epoch"]) == (1, 1)
    resumed = ct.fit(spec, backend="torch", data=loader, run_dir=tmp_path, resume=tmp_path)
    assert_same_params(whole, resumed)
    streamed = ct.evaluate(spec, tmp_path, backend="torch", data=(b for b in loader))
    assert streamed == pytest.approx(ct.evaluate(spec, tmp_path, backend="torch", data=(x, y)))


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_predict_reads_the_inputs_of_a_loader_in_order(arrays, tmp_path, backend):
    """Batches of bare inputs, `(x,)` tuples (a DataLoader over TensorDataset(x)) or dicts
    without targets predict the same rows as the array, in order."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = arrays
    spec = stream_spec(max_epochs=1)
    ct.fit(spec, backend=backend, data=(x, y), run_dir=tmp_path)
    expected = ct.predict(spec, tmp_path, x=x, backend=backend)
    assert expected.shape == (len(x), 3)
    loader = DataLoader(TensorDataset(torch.from_numpy(x)), batch_size=20)
    dicts = ({"image": x[i : i + 40], "id": i} for i in range(0, len(x), 40))
    for stream in (loader, [x[:50], x[50:]], ct.Batches(dicts, x_key="image")):
        got = ct.predict(spec, tmp_path, x=stream, backend=backend)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    as_lists = ct.predict(spec, tmp_path, x=x[:3].tolist(), backend=backend)  # rows, not batches
    np.testing.assert_allclose(as_lists, expected[:3], rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="predict data: batch 0 is a dict with keys"):
        ct.predict(spec, tmp_path, x=[{"pixels": x}], backend=backend)


def test_inputs_of_the_wrong_shape_are_named_before_any_step(arrays, tmp_path):
    """Arrays, a loader's batch, a spec's source and prediction inputs whose samples do not
    have `model.input_shape` (8 here) give a DataError naming where, not a framework error."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = arrays
    spec = stream_spec()
    wide = np.zeros((96, 10), np.float32)
    cases = {
        "data: inputs of shape (96, 10)": dict(data=(wide, y)),
        "val_data: inputs of shape (96, 10)": dict(data=(x, y), val_data=(wide, y)),
        "data, batch 0: inputs of shape (32, 10)": dict(
            data=DataLoader(TensorDataset(torch.from_numpy(wide), torch.from_numpy(y)), 32)
        ),
    }
    for message, data in cases.items():
        with pytest.raises(DataError, match=re.escape(message) + ".*input_shape is \\[8\\]"):
            ct.fit(spec, backend="torch", run_dir=False, **data)
    from_source = {**tiny_spec(), "model": {**tiny_spec()["model"], "input_shape": [4]}}
    with pytest.raises(DataError, match="data.source 'random:classification'.*shape \\(8,\\)"):
        ct.fit(from_source, backend="jax", run_dir=False)
    ct.fit(spec, backend="torch", data=(x, y), run_dir=tmp_path)
    with pytest.raises(DataError, match="predict data: inputs of shape \\(5, 10\\)"):
        ct.predict(spec, tmp_path, x=wide[:5], backend="torch")


def test_npy_source_with_a_targets_file_or_a_target_column(tmp_path, arrays):
    x, y = arrays
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "xy.npy", np.column_stack([x, y]).astype(np.float32))
    spec = stream_spec(max_epochs=1)
    reference = fit(spec, (x, y))
    by_file = {**spec, "data": {**spec["data"], "source": f"npy:{tmp_path / 'x.npy'}"}}
    by_file["data"]["options"] = {"y": str(tmp_path / "y.npy")}
    assert_same_params(reference, fit(by_file, None))
    by_column = {**by_file, "data": {**by_file["data"], "source": f"npy:{tmp_path / 'xy.npy'}"}}
    by_column["data"]["options"] = {"target_column": -1}
    assert_same_params(reference, fit(by_column, None))


def test_csv_source_reads_columns_and_names_the_bad_cell(tmp_path, arrays):
    x, y = arrays
    header = [f"f{i}" for i in range(8)]
    rows = [",".join(["label", "unused", *header])]
    rows += [
        ",".join([str(t), "7", *(repr(float(v)) for v in xs)]) for xs, t in zip(x, y, strict=True)
    ]
    (tmp_path / "good.csv").write_text("\n".join(rows) + "\n")
    spec = stream_spec(max_epochs=1)
    spec["data"].update(
        source=f"csv:{tmp_path / 'good.csv'}", options={"target": "label", "columns": header}
    )
    assert_same_params(fit(stream_spec(max_epochs=1), (x, y)), fit(spec, None))
    rows[2] = rows[2].replace(repr(float(x[1][2])), "oops", 1)
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    spec["data"]["source"] = f"csv:{tmp_path / 'bad.csv'}"
    with pytest.raises(DataError, match=r"bad.csv, line 3, column 'f2': cannot read 'oops'"):
        fit(spec, None)
    spec["data"]["options"] = {"target": "nope"}
    with pytest.raises(DataError, match=r"data.options.target: .* has no column 'nope'"):
        fit(spec, None)


FIT_SPIRALS = """
import json, sys, crosstrain as ct
spec = json.loads(sys.argv[1])
result = ct.fit(spec, backend="torch", run_dir=False)
print(json.dumps({"val_accuracy": result.metrics["val_accuracy"]}))
"""


def test_the_spirals_example_plugin_adds_a_data_source(tmp_path):
    site = Path(tempfile.mkdtemp(prefix="crosstrain-spirals-", dir=tmp_path))
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [
            *pip,
            "--no-compile",
            "--target",
            str(site),
            str(ROOT / "examples/plugins/crosstrain-spirals"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    spec = tiny_spec()
    spec["data"] = {
        "source": "spirals:2",
        "options": {"samples_per_arm": 100, "noise": 0.0},
        "validation_split": 0.2,
        "batch_size": 16,
    }
    spec["model"]["input_shape"] = [2]
    spec["model"]["layers"][-1]["units"] = 2
    spec["trainer"]["max_epochs"] = 3
    done = subprocess.run(
        [sys.executable, "-c", FIT_SPIRALS, json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1])["val_accuracy"] > 0.5
