"""Issue 14, correctness: targets the loss cannot use, and input ids the model has no embedding
for, are refused before step 1, the same on every backend (the checks are core's,
`crosstrain.data.targets` and `crosstrain.data.inputs`).

One row per case: the real command line, exit 2, one `error:` line naming the array, the
offending value and row and the model's output units, and no file changed outside `runs/`.
The streamed-data rows run in-process (a loader cannot be passed on the command line).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import crosstrain as ct
import numpy as np
import pytest
from bad_inputs import Refusal, assert_refused, run_cli, snapshot
from conftest import EXAMPLES
from crosstrain.errors import DataError

DIGITS = "digits_mlp.yaml"
FAST = "--set trainer.max_epochs=1 trainer.progress=false trainer.loggers=[]"


def _npz(cwd: Path, name: str, y: np.ndarray, features: int = 64) -> None:
    x = np.zeros((len(y), features), np.float32)
    np.savez(cwd / name, x=x, y=y)


def _labels(bad: int, at: int = 7, rows: int = 40) -> np.ndarray:
    y = np.arange(rows) % 10
    y[at] = bad
    return y


CASES = {
    "dense_fewer_units_than_classes": (
        f"fit {DIGITS} --backend {{backend}} --set model.layers[3].units=5 {FAST}",
        None,
        ("data.source 'sklearn:digits'", "label 5 in row", "model.layers[3] has 5 units"),
    ),
    "label_above_classes": (
        f"fit {DIGITS} --backend {{backend}} --set data.source=npz:y11.npz {FAST}",
        ("y11.npz", _labels(11)),
        ("data.source 'npz:y11.npz'", "label 11 in row 7", "has 10 units", "[0, 9]"),
    ),
    "negative_label": (
        f"fit {DIGITS} --backend {{backend}} --set data.source=npz:yneg.npz {FAST}",
        ("yneg.npz", _labels(-1, at=3)),
        ("data.source 'npz:yneg.npz'", "label -1 in row 3", "has 10 units"),
    ),
    "float_labels_for_cross_entropy": (
        f"fit {DIGITS} --backend {{backend}} --set data.source=npz:yfloat.npz {FAST}",
        ("yfloat.npz", (np.arange(40) % 10).astype(np.float32)),
        ("data.source 'npz:yfloat.npz'", "float labels of shape (40,)", "10 units"),
    ),
    "bce_target_outside_0_1": (
        f"fit {DIGITS} --backend {{backend}} --set data.source=npz:ybce.npz "
        f"loss=binary_cross_entropy model.layers[3].units=1 {FAST}",
        ("ybce.npz", np.r_[np.zeros(5), 2.0, np.ones(34)].astype(np.float32)),
        ("data.source 'npz:ybce.npz'", "target 2.0 in row 5", "[0, 1]"),
    ),
    "mse_targets_of_another_size": (
        f"fit {DIGITS} --backend {{backend}} --set data.source=npz:ymse.npz loss=mse {FAST}",
        ("ymse.npz", np.zeros((40, 3), np.float32)),
        ("data.source 'npz:ymse.npz'", "3 value(s) per sample", "model outputs 10"),
    ),
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLES / DIGITS, tmp_path / DIGITS)
    return tmp_path


@pytest.mark.parametrize("backend", ["torch", "jax", "keras:jax"])
@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_step_one(workdir: Path, case: str, backend: str) -> None:
    line, data, fragments = CASES[case]
    if data is not None:
        _npz(workdir, *data)
    before = snapshot(workdir)
    done = run_cli(line.format(backend=backend), workdir)
    assert_refused(done, Refusal(code=2, fragments=fragments), before, workdir)
    assert not list((workdir / "runs").rglob("step-*")), "a checkpoint was written"


IDS_SPEC = """\
name: ids
data: {source: "npz:ids.npz", batch_size: 8, validation_split: 0.0}
model:
  input_shape: [6]
  layers: [{type: Embedding, vocab_size: 10, dim: 4}, {type: Flatten}, {type: Dense, units: 3}]
trainer: {max_epochs: 1, progress: false, loggers: []}
"""


def _ids(bad: float, at: tuple[int, int], dtype: type = np.int64) -> np.ndarray:
    x = (np.arange(40 * 6).reshape(40, 6) % 10).astype(dtype)
    x[at] = bad
    return x


ID_CASES = {
    "id_above_vocabulary": (
        _ids(10, (7, 2)),
        (
            "data.source 'npz:ids.npz'",
            "input id 10 in row 7",
            "model.layers[0] (Embedding with vocab_size 10 takes ids in [0, 9]",
        ),
    ),
    "negative_id": (_ids(-1, (3, 0)), ("input id -1 in row 3", "[0, 9]")),
    "fractional_id": (
        _ids(2.5, (4, 1), np.float32),
        ("data.source 'npz:ids.npz'", "input 2.5 in row 4 is not an integer id"),
    ),
}


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("case", list(ID_CASES))
def test_input_ids_outside_the_vocabulary_are_refused(tmp_path: Path, case: str, backend: str):
    """Integer-id inputs: torch would fail inside F.embedding, XLA would clamp them silently."""
    x, fragments = ID_CASES[case]
    (tmp_path / "ids.yaml").write_text(IDS_SPEC, encoding="utf-8")
    np.savez(tmp_path / "ids.npz", x=x, y=np.arange(40) % 3)
    before = snapshot(tmp_path)
    done = run_cli(f"fit ids.yaml --backend {backend}", tmp_path)
    assert_refused(done, Refusal(code=2, fragments=fragments), before, tmp_path)


def test_evaluate_checks_labels_too(workdir: Path) -> None:
    """evaluate refuses the labels of its data the same way (after loading the checkpoint)."""
    first = run_cli(f"fit {DIGITS} {FAST}", workdir)
    assert first.returncode == 0, first.stderr
    _npz(workdir, "y11.npz", _labels(11))
    (workdir / "eval.yaml").write_text(f"extends: {DIGITS}\ndata: {{source: 'npz:y11.npz'}}\n")
    before = snapshot(workdir)
    done = run_cli("evaluate eval.yaml --checkpoint latest", workdir)
    expected = Refusal(code=2, fragments=("data.source 'npz:y11.npz'", "label 11 in row 7"))
    assert_refused(done, expected, before, workdir)


# -- in-process: arrays passed to fit, and streams (first batch of each pass) -----------------


def _spec(**trainer: object) -> ct.Spec:
    return ct.load_spec(EXAMPLES / DIGITS).override(
        {"trainer.progress": False, "trainer.loggers": [], "trainer.max_epochs": 1, **trainer}
    )


def test_val_data_labels_are_checked_by_name() -> None:
    x = np.zeros((8, 64), np.float32)
    with pytest.raises(DataError, match=r"^val_data: label 10 in row 2 .* 10 units"):
        ct.fit(
            _spec(),
            backend="torch",
            data=(x, np.arange(8)),
            val_data=(x, np.array([0, 1, 10, 3, 4, 5, 6, 7])),
            run_dir=False,
        )


def test_a_stream_is_checked_on_its_first_batch() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.zeros((64, 64))
    y = torch.arange(64) % 12  # labels 10 and 11 already in the first batch of 32
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    with pytest.raises(DataError, match=r"^data, batch 0: label 10 in row 10 .* 10 units"):
        ct.fit(_spec(**{"data.validation_split": 0.0}), backend="jax", data=loader, run_dir=False)


def test_good_labels_pass_on_every_kind_of_data() -> None:
    x = np.zeros((16, 64), np.float32)
    one_hot = np.eye(10, dtype=np.float32)[np.arange(16) % 10]  # probabilities: allowed
    result = ct.fit(_spec(**{"trainer.max_steps": 1}), backend="torch", data=(x, one_hot))
    assert result.history
