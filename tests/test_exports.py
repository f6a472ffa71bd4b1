"""Exports a user loads without crosstrain (issue 16, item 10), through the real CLI."""

from __future__ import annotations

import importlib.util
import shutil
import zipfile

import crosstrain as ct
import numpy as np
import pytest
from bad_inputs import changed_files, run_cli, snapshot
from conftest import tiny_spec

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
    import keras

    loadable = shutil.copy(written, tmp_path / "copy.keras")  # Keras reads only *.keras names
    model = keras.saving.load_model(loadable, safe_mode=True)
    x = np.random.default_rng(2).standard_normal((6, 8)).astype(np.float32)
    expected = ct.predict(spec, checkpoint, x, backend="torch")
    np.testing.assert_allclose(np.asarray(model.predict(x, verbose=0)), expected, atol=1e-5)
