"""`crosstrain.fit` in a real Jupyter kernel: rich's live widget, epoch lines, plot and pandas.

One notebook, executed once by nbclient on an ipykernel running this venv's Python (a
kernelspec written into a temporary JUPYTER_PATH names `sys.executable`).
"""

from __future__ import annotations

import json
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

KERNEL = "crosstrain-test-venv"

FIT_CELL = """
import crosstrain
spec = {
    "name": "nb",
    "data": {"source": "random:classification",
             "options": {"samples": 128, "features": 8, "classes": 3},
             "validation_split": 0.25, "batch_size": 32},
    "model": {"input_shape": [8], "layers": [{"type": "Dense", "units": 3}]},
    "metrics": ["accuracy"],
    "trainer": {"max_epochs": 2, "log_every_n_steps": 1},
}
result = crosstrain.fit(spec, backend="torch", run_dir=False)
print("final", sorted(result.metrics))
"""


def outputs_of(cell) -> list[dict]:
    return [dict(output) for output in cell.outputs]


def test_fit_in_a_notebook_shows_rich_progress_plot_and_table(tmp_path, monkeypatch):
    kernel_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    kernel_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "crosstrain test", "language": "python"}
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for name in ("CROSSTRAIN_ACCELERATOR", "CROSSTRAIN_BACKEND", "MPLBACKEND"):
        monkeypatch.delenv(name, raising=False)

    new = nbformat.v4.new_code_cell
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        new("import sys; print(sys.executable)"),
        new(FIT_CELL),
        new("result.plot()"),
        new("result.history.to_pandas()"),
    ]
    client = nbclient.NotebookClient(
        notebook, kernel_name=KERNEL, timeout=180, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    python, fit, plot, table = (outputs_of(cell) for cell in notebook.cells)

    assert python[0]["text"].strip() == sys.executable
    displays = [o["data"] for o in fit if o["output_type"] == "display_data"]
    widgets = [d for d in displays if "application/vnd.jupyter.widget-view+json" in d]
    assert widgets, fit  # rich's live progress, drawn as an ipywidgets Output
    epoch_lines = [d["text/html"] for d in displays if "epoch " in d.get("text/plain", "")]
    assert len(epoch_lines) == 2 and "epoch 2/2" in epoch_lines[1] and "val_loss" in epoch_lines[1]
    printed = "".join(o.get("text", "") for o in fit if o["output_type"] == "stream")
    assert "final ['train_accuracy', 'train_loss', 'val_accuracy', 'val_loss']" in printed
    assert "image/png" in plot[0]["data"]  # the figure shows as a picture, not as text
    assert (
        "<table" in table[0]["data"]["text/html"]
        and "val_accuracy" in table[0]["data"]["text/html"]
    )
