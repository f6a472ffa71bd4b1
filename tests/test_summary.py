"""`summary(spec)`: the Keras-style layer table, computed without any framework."""

from __future__ import annotations

import crosstrain as ct
import pytest
from conftest import EXAMPLES, run_python, tiny_spec
from crosstrain.errors import SpecError
from crosstrain.nn.model import count_params
from crosstrain.spec.summary import format_table, megabytes, shape_text, summary


def rows_of(text: str) -> dict[str, list[str]]:
    """Layer name (stripped of indentation) -> the other cells of its row."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) >= 3 and cells[-1].replace(",", "").isdigit() and not line.endswith(")"):
            rows[cells[0]] = cells[1:]
    return rows


def test_digits_mlp_table_and_totals():
    text = summary(EXAMPLES / "digits_mlp.yaml")
    assert text.startswith('Model "digits-mlp"  input (None, 64)')
    assert text.splitlines()[2].split() == ["Layer", "Type", "Output", "shape", "Params"]
    rows = rows_of(text)
    assert rows["dense_0"] == ["Dense", "(None,", "128)", "8,320"]
    assert rows["relu_1"][-1] == "0" and rows["dropout_2"][0] == "Dropout"
    assert rows["dense_3"] == ["Dense", "(None,", "10)", "1,290"]
    assert "Total params:         9,610  (0.04 MB)" in text
    assert "Trainable params:     9,610" in text
    assert "Non-trainable params:     0  (0.00 MB)" in text


def test_non_trainable_params_and_image_shapes():
    spec = {
        "name": "cnn",
        "model": {
            "input_shape": [8, 8, 1],
            "layers": [
                {"type": "Conv2D", "filters": 16, "kernel_size": 3, "padding": "same"},
                {"type": "BatchNorm"},
                {"type": "MaxPool2D", "pool_size": 2},
                {"type": "Flatten"},
                {"type": "Dense", "units": 10},
            ],
        },
    }
    text = summary(spec)
    assert "(None, 8, 8, 16)" in text and "(None, 4, 4, 16)" in text and "(None, 256)" in text
    rows = rows_of(text)
    assert rows["conv2d_0"][-1] == "160" and rows["batchnorm_1"][-1] == "64"
    assert rows["dense_4"][-1] == "2,570"
    trainable, frozen = count_params(ct.load_spec(spec).model)
    assert (trainable, frozen) == (160 + 32 + 2570, 32)
    assert "Total params:         2,794  (0.01 MB)" in text
    assert "Trainable params:     2,762" in text
    assert "Non-trainable params:    32  (<0.01 MB)" in text
    assert "(None, " in summary(EXAMPLES / "digits_cnn.yaml")


def test_nested_layers_are_indented_under_their_parent_with_its_total():
    spec = {
        "name": "nested",
        "model": {
            "input_shape": [10, 16],
            "layers": [
                {
                    "type": "Residual",
                    "layers": [{"type": "LayerNorm"}, {"type": "Dense", "units": 16}],
                },
                {"type": "Flatten"},
                {"type": "Dense", "units": 3},
            ],
        },
    }
    lines = summary(spec).splitlines()
    parent = next(line for line in lines if line.startswith("residual_0 "))
    child = next(line for line in lines if "residual_0/dense_1" in line)
    assert child.startswith("  residual_0/dense_1") and child.split()[-1] == "272"
    assert parent.split()[-1] == f"{32 + 272:,}"
    assert "(None, 160)" in summary(spec)


def test_accepts_a_spec_object_and_reports_problems():
    spec = ct.load_spec(tiny_spec())
    assert "dense_2" in summary(spec)
    with pytest.raises(SpecError, match="no model"):
        summary({"name": "empty"})
    bad = tiny_spec()
    bad["model"]["input_shape"] = [4, 4]
    bad["model"]["layers"] = [{"type": "Conv2D", "filters": 2, "kernel_size": 3}]
    with pytest.raises(SpecError, match=r"model.layers\[0\]"):
        summary(bad)


def test_formatting_helpers():
    assert shape_text((64,)) == "(None, 64)"
    assert shape_text((8, 8, 1)) == "(None, 8, 8, 1)"
    assert megabytes(0) == "0.00 MB" and megabytes(10) == "<0.01 MB"
    assert megabytes(1024**2 // 4) == "1.00 MB"
    table = format_table(["a", "number"], [["long cell", "1"], ["x", "1,234"]], right=(1,))
    lines = table.splitlines()
    assert lines[0] == lines[2] == "─" * len("long cell  number")
    assert lines[3] == "long cell       1" and lines[4] == "x           1,234"


def test_summary_imports_no_framework():
    code = (
        "import sys; from crosstrain.spec.summary import summary; "
        f"print(summary({str(EXAMPLES / 'digits_cnn.yaml')!r})); "
        "print(sorted(m for m in ('torch', 'jax', 'keras', 'tensorflow') if m in sys.modules))"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")
