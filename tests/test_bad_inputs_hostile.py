"""Issue 25, hostile inputs: each is one `error:` line naming the file or field, never a
traceback, and changes nothing outside `runs/`.

One row per case on the real command line in a fresh working directory (tests/bad_inputs.py).
The table with before/after is docs/hostile-inputs.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import Refusal, assert_refused, run_cli, snapshot
from conftest import tiny_spec

FIT = "fit spec.json --backend torch --no-progress"


def _spec(spec: dict, **files: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(cwd: Path) -> None:
        (cwd / "spec.json").write_text(json.dumps(spec))
        for make_file in files.values():
            make_file(cwd)

    return make


def _data_spec(source: str, **data: object) -> dict:
    return tiny_spec(data={"source": source, "batch_size": 16, **data})


def _npy(name: str, array: np.ndarray) -> Callable[[Path], None]:
    return lambda cwd: np.save(cwd / name, array)


def _npz(name: str, **arrays: np.ndarray) -> Callable[[Path], None]:
    return lambda cwd: np.savez(cwd / name, **arrays)


def _bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda cwd: (cwd / name).write_bytes(data)


X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
Y = np.arange(64) % 3

CASES = [
    pytest.param(
        _spec(tiny_spec()),
        "config spec.json --set model.layers[0].type=[Dense]",
        Refusal(fragments=("model.layers[0]: unknown layer type ['Dense']",)),
        id="layer_type_not_a_string",
    ),
    pytest.param(
        _spec(tiny_spec()),
        "config spec.json --set 'model.layers[0]={type: {a: 1}}'",
        Refusal(fragments=("model.layers[0]",)),
        id="layer_type_a_mapping",
    ),
    pytest.param(
        _spec(
            _data_spec("npy:x.npy", options={"y": "y.npy"}),
            x=_npy("x.npy", X),
            y=_npy("y.npy", Y.astype(bool)),
        ),
        FIT,
        Refusal(fragments=("data.source 'npy:x.npy': cross_entropy got bool labels",)),
        id="bool_labels_npy",
    ),
    pytest.param(
        _spec(
            _data_spec("npy:x.npy", options={"y": "y.npy"}),
            x=_npy("x.npy", X.astype(str)),
            y=_npy("y.npy", Y),
        ),
        FIT,
        Refusal(fragments=("data.source 'npy:x.npy': x holds strings (dtype <U",)),
        id="string_inputs_npy",
    ),
    pytest.param(
        _spec(
            _data_spec("npy:x.npy", options={"y": "y.npy"}),
            x=_npy("x.npy", np.float32(3)),
            y=_npy("y.npy", Y),
        ),
        FIT,
        Refusal(fragments=("x.npy holds a 0-d array (the single value 3.0)",)),
        id="zero_d_npy",
    ),
    pytest.param(
        _spec(_data_spec("npz:bad.npz"), f=_bytes("bad.npz", b"PK\x03\x04" + b"junk" * 50)),
        FIT,
        Refusal(fragments=("cannot read bad.npz as an .npz archive (BadZipFile",)),
        id="corrupt_npz",
    ),
    pytest.param(
        _spec(_data_spec("npz:data"), d=lambda cwd: (cwd / "data").mkdir()),
        FIT,
        Refusal(fragments=("data.source: data is a directory, not an .npz file",)),
        id="npz_on_a_directory",
    ),
    pytest.param(
        _spec(_data_spec("csv:big.csv"), f=_bytes("big.csv", b"a,b\n1," + b"2" * 140_000)),
        FIT,
        Refusal(fragments=("big.csv, line 2: field larger than field limit (131072)",)),
        id="csv_field_over_131072_chars",
    ),
    pytest.param(
        _spec(
            _data_spec("csv:latin.csv"), f=_bytes("latin.csv", "a,y\ncaf\xe9,1\n".encode("latin-1"))
        ),
        FIT,
        Refusal(fragments=("latin.csv is not UTF-8 text (byte 0xe9", "save it as UTF-8")),
        id="csv_latin1",
    ),
    pytest.param(
        _spec(_data_spec("csv:dup.csv"), f=_bytes("dup.csv", b"a,a,y\n" + b"1,2,0\n3,4,1\n" * 8)),
        FIT,
        Refusal(fragments=("dup.csv names column 'a' more than once",)),
        id="csv_duplicate_column_names",
    ),
    pytest.param(
        _spec(_data_spec("csv:c.csv", options={"classes": ["cat0", "cat0", "cat1"]})),
        "config spec.json",
        Refusal(
            fragments=("data.options.classes", "names 'cat0' more than once"), max_stderr_lines=3
        ),
        id="csv_duplicate_classes",
    ),
    pytest.param(
        _spec(
            _data_spec("csv:y.csv", options={"target_dtype": "int64"}),
            f=_bytes(
                "y.csv",
                b"a,y\n"
                + b"".join(b"%d,%s\n" % (i, b"inf" if i == 5 else b"1") for i in range(20)),
            ),
        ),
        FIT,
        Refusal(fragments=("y.csv, target column: target inf in row 5 is not a whole number",)),
        id="csv_inf_target_int64",
    ),
    pytest.param(
        _spec(_data_spec("npz:c.npz"), f=_npz("c.npz", x=X.astype(np.complex64), y=Y)),
        FIT,
        Refusal(fragments=("data.source 'npz:c.npz': x holds complex numbers (complex64)",)),
        id="complex_inputs",
    ),
    pytest.param(
        _spec(tiny_spec()),
        "config spec.json --set 'model.layers[1]={type: Dropout, rate: false}'",
        Refusal(fragments=("model.layers[1].rate", "expected a number, got the boolean False")),
        id="dropout_rate_false",
    ),
]


@pytest.mark.parametrize(("setup", "line", "expected"), CASES)
def test_refused(setup: Callable[[Path], None], line: str, expected: Refusal, tmp_path: Path):
    setup(tmp_path)
    before = snapshot(tmp_path)
    done = run_cli(line, tmp_path)
    assert_refused(done, expected, before, tmp_path)
