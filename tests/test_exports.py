"""Exports a user loads without crosstrain (issue 16, item 10), through the real CLI."""

from __future__ import annotations

import importlib.util
import shutil
import zipfile

import crosstrain as ct
import numpy as np
import pytest
from bad_inputs import changed_files, run_cli, snapshot
from conftest import run_python, tiny_spec

needs_keras = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="needs keras")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A torch checkpoint of the tiny spec, and the spec."""
    root = tmp_path_factory.mktemp("export")
    spec = tiny_spec(trainer={"max_epochs": 1, "progress": False, "run_dir": str(root / "runs")})
    result = ct.fit(spec, backend="torch")
    return spec, result.last_checkpoint


@needs_keras
@pytest.mark.parametrize("name", ["model.bin", "model", "weights.keras.zip"])
def test_keras_export_takes_any_output_name(name, trained, tmp_path):
    spec, checkpoint = trained
    (tmp_path / "out").mkdir()
    before = snapshot(tmp_path)
    done = run_cli(f"export {checkpoint} --to keras --output out/{name}", tmp_path)
    assert done.returncode == 0, done.stderr
    assert changed_files(before, snapshot(tmp_path)) == {f"out/{name}"}  # no temporary left
    written = tmp_path / "out" / name
    assert zipfile.is_zipfile(written)
    loadable = shutil.copy(written, tmp_path / "copy.keras")  # Keras reads only *.keras names
    x = np.random.default_rng(2).standard_normal((6, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = (  # plain Keras in its own process (one engine per process), no crosstrain
        "import keras, numpy as np\n"
        f"model = keras.saving.load_model({str(loadable)!r}, safe_mode=True)\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(model.predict(x, verbose=0)))\n"
    )
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = ct.predict(spec, checkpoint, x, backend="torch")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="needs onnx, onnxscript and onnxruntime (the onnx extra)",
)
CNN = {
    "name": "cnn",
    "data": {"source": "sklearn:digits", "options": {"images": True}, "batch_size": 128},
    "model": {
        "input_shape": [8, 8, 1],
        "layers": [
            {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same"},
            {"type": "BatchNorm"},
            {"type": "ReLU"},
            {"type": "MaxPool2D", "pool_size": 2},
            {"type": "Flatten"},
            {"type": "Dense", "units": 10},
        ],
    },
    "trainer": {"max_epochs": 1, "progress": False},
}


@needs_onnx
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_onnx_export_runs_in_onnxruntime_like_crosstrain_predict(model, tmp_path):
    import yaml

    spec = tiny_spec() if model == "mlp" else dict(CNN)
    spec["trainer"] = {"max_epochs": 1, "progress": False}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert run_cli("fit spec.yaml --backend torch -q", tmp_path).returncode == 0
    shape = ct.load_spec(spec).model.input_shape
    x = np.random.default_rng(5).standard_normal((13, *shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    before = snapshot(tmp_path)
    done = run_cli("export runs --to onnx --output out/", tmp_path)
    assert done.returncode == 2 and "not a crosstrain checkpoint" in done.stderr
    checkpoint = next((tmp_path / "runs").glob("*/*/checkpoints/step-*"))
    done = run_cli(f"export {checkpoint} --to onnx --output out/", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # the exporter's notices stay out of the way
    (written,) = changed_files(before, snapshot(tmp_path))
    assert written.startswith("out/") and written.endswith(".onnx")
    predicted = run_cli(
        f"predict spec.yaml --checkpoint {checkpoint} --input x.npy --output p.npy", tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / written))
    assert [i.name for i in session.get_inputs()] == ["x"]
    (got,) = session.run(None, {"x": x})  # 13 rows: the batch axis is dynamic
    np.testing.assert_allclose(got, np.load(tmp_path / "p.npy"), rtol=1e-5, atol=1e-5)


def trained_with_inputs(spec: dict, tmp_path, rows: int) -> tuple:
    """Trains `spec` for one epoch on torch through the CLI in `tmp_path`; returns its
    checkpoint and `rows` random inputs, also saved as `x.npy`."""
    import yaml

    spec["trainer"] = {"max_epochs": 1, "progress": False}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert run_cli("fit spec.yaml --backend torch -q", tmp_path).returncode == 0
    checkpoint = next((tmp_path / "runs").glob("*/*/checkpoints/step-*"))
    shape = ct.load_spec(spec).model.input_shape
    x = np.random.default_rng(rows).standard_normal((rows, *shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return checkpoint, x


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_torch_program_export_loads_with_torch_alone_like_crosstrain_predict(model, tmp_path):
    spec = tiny_spec() if model == "mlp" else dict(CNN)
    checkpoint, x = trained_with_inputs(spec, tmp_path, 11)
    before = snapshot(tmp_path)
    done = run_cli(f"export {checkpoint} --to torch-program --output out/model.pt2", tmp_path)
    assert done.returncode == 0, done.stderr
    assert changed_files(before, snapshot(tmp_path)) == {"out/model.pt2"}
    code = (  # torch alone: crosstrain is not importable in this process
        "import sys\n"
        "sys.modules['crosstrain'] = None\n"
        "import numpy as np, torch\n"
        "program = torch.export.load('out/model.pt2').module()\n"
        "x = torch.from_numpy(np.load('x.npy'))\n"
        "np.save('y.npy', program(x).detach().numpy())\n"  # 11 rows: the batch axis is dynamic
    )
    loaded = run_python(code, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    expected = ct.predict(spec, checkpoint, x, backend="torch")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_jax_program_export_loads_with_jax_alone_like_crosstrain_predict(model, tmp_path):
    """`--to jax-program` writes one .py module that needs jax and numpy only (crosstrain and
    flax cannot be imported in the loading process), from a checkpoint of another backend."""
    spec = tiny_spec() if model == "mlp" else dict(CNN)
    if model == "cnn":  # inference mode: the export has no dropout and uses moving statistics
        spec["model"] = {**CNN["model"], "layers": [*CNN["model"]["layers"]]}
        spec["model"]["layers"].insert(4, {"type": "Dropout", "rate": 0.5})
    checkpoint, x = trained_with_inputs(spec, tmp_path, 9)
    before = snapshot(tmp_path)
    done = run_cli(f"export {checkpoint} --to jax-program --output out/model.py", tmp_path)
    assert done.returncode == 0, done.stderr
    assert changed_files(before, snapshot(tmp_path)) == {"out/model.py"}
    code = (  # jax alone: neither crosstrain nor flax is importable in this process
        "import sys\n"
        "sys.modules['crosstrain'] = None\n"
        "sys.modules['flax'] = None\n"
        "import runpy, numpy as np\n"
        "module = runpy.run_path('out/model.py')\n"
        "np.save('y.npy', module['predict'](np.load('x.npy')))\n"  # 9 rows: the batch is dynamic
        "try:\n"
        "    module['predict'](np.zeros((2, 3), np.float32))\n"
        "except ValueError as err:\n"
        "    print('refused:', err)\n"
    )
    loaded = run_python(code, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "refused: x has shape (2, 3); expected (batch, *" in loaded.stdout
    expected = ct.predict(spec, checkpoint, x, backend="torch")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)
