"""Day-two ergonomics (issue 16, item 8): `ct.summary` as data, `FitResult.evaluate`/`predict`
in memory, and `evaluate`/`predict`/`compare` taking `--set` and `--run-dir` like `fit`, on
real frameworks and real CLI subprocesses."""

from __future__ import annotations

import json

import crosstrain as ct
import numpy as np
import pytest
import yaml
from bad_inputs import Refusal, assert_refused, run_cli, snapshot
from conftest import EXAMPLES, ROOT, run_python, tiny_spec

BACKENDS = ["torch", "jax", "keras:jax"]


def test_summary_is_the_table_with_rows():
    import crosstrain.spec.summary  # binds the submodule to ct.summary: it must stay callable

    table = ct.summary(EXAMPLES / "digits_mlp.yaml")
    assert isinstance(table, ct.ModelSummary) and isinstance(table, str)
    assert str(table).startswith('Model "digits-mlp"') and repr(table) == str(table)
    assert [r.name for r in table.rows] == ["dense_0", "relu_1", "dropout_2", "dense_3"]
    assert table.row("dense_0").params == 8320 and table.row("dense_3").output_shape == (10,)
    assert (table.total_params, table.trainable_params, table.non_trainable_params) == (
        9610,
    ) * 2 + (0,)
    assert crosstrain.spec.summary.summary(EXAMPLES / "digits_mlp.yaml") == table
    with pytest.raises(KeyError, match="no layer 'dense_9'; layers: dense_0, relu_1"):
        table.row("dense_9")


def test_summary_rows_of_nested_layers():
    spec = tiny_spec()
    spec["model"]["layers"].insert(
        1, {"type": "Residual", "layers": [{"type": "Dense", "units": 16}, {"type": "ReLU"}]}
    )
    table = ct.summary(spec)
    nested = table.row("residual_1/dense_0")
    assert (nested.depth, nested.params, nested.type) == (1, 16 * 16 + 16, "Dense")
    assert table.row("residual_1").params == nested.params
    assert sum(r.params for r in table.rows if r.depth == 0) == table.total_params


@pytest.mark.parametrize("backend", BACKENDS)
def test_result_evaluate_and_predict_in_memory(backend):
    if not backend.startswith("keras"):
        in_memory_checks(backend)
        return
    # Keras holds one engine per process: another test of this worker may have imported it
    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_python_ergonomics import in_memory_checks\n"
        f"in_memory_checks({backend!r})\n"
    )
    done = run_python(code, cwd=ROOT, env={"KERAS_BACKEND": backend.split(":")[1]})
    assert done.returncode == 0, done.stderr[-3000:]


def in_memory_checks(backend: str) -> None:
    """`FitResult.evaluate`/`predict` after a fit that wrote no files."""
    spec = tiny_spec()
    result = ct.fit(spec, backend=backend, run_dir=False)
    assert result.run_dir is None and result.last_checkpoint is None
    scored = result.evaluate()
    assert set(scored) == {"val_loss", "val_accuracy"}
    np.testing.assert_allclose(scored["val_loss"], result.metrics["val_loss"], rtol=1e-5)
    assert scored["val_accuracy"] == pytest.approx(result.metrics["val_accuracy"])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    given = result.evaluate((x, y))
    assert set(given) == {"test_loss", "test_accuracy"}
    outputs = result.predict(x)
    assert outputs.shape == (40, 3)
    logits = outputs.astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -log_probs[np.arange(40), y].mean()  # evaluate scores all 40 rows given
    np.testing.assert_allclose(given["test_loss"], expected, rtol=1e-4)
    assert given["test_accuracy"] == pytest.approx((outputs.argmax(1) == y).mean())
    assert result.predict().shape == (256, 3)  # every input of the spec's data


def test_result_predict_equals_predict_from_its_checkpoint(tmp_path):
    spec = tiny_spec(trainer={"max_epochs": 2, "progress": False, "run_dir": str(tmp_path)})
    result = ct.fit(spec, backend="torch")
    x = np.random.default_rng(4).standard_normal((9, 8)).astype(np.float32)
    from_checkpoint = ct.predict(spec, result.last_checkpoint, x, backend="jax")
    np.testing.assert_allclose(result.predict(x), from_checkpoint, rtol=1e-5, atol=1e-6)
    no_split = ct.evaluate(
        ct.load_spec(spec).override({"data.validation_split": 0}), result.last_checkpoint
    )
    assert set(no_split) == {"train_loss", "train_accuracy"}


def test_a_finished_resume_result_says_what_to_use(tmp_path):
    spec = tiny_spec(trainer={"max_epochs": 1, "progress": False, "run_dir": str(tmp_path)})
    first = ct.fit(spec, backend="torch")
    again = ct.fit(spec, backend="torch", resume=first.last_checkpoint)
    assert again.extras.get("already_finished")
    with pytest.raises(ct.CrosstrainError, match=r"use crosstrain.evaluate\(spec, checkpoint\)"):
        again.evaluate()


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_elsewhere(tmp_path_factory):
    """One torch fit of the tiny spec whose runs live under `elsewhere/` (not `runs/`)."""
    cwd = tmp_path_factory.mktemp("cli")
    spec = tiny_spec()
    spec["trainer"] = {"max_epochs": 2, "log_every_n_steps": 2, "progress": False}
    (cwd / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = run_cli("fit spec.yaml --backend torch --run-dir elsewhere", cwd)
    assert done.returncode == 0, done.stderr
    return cwd


def test_evaluate_takes_set_and_run_dir_and_says_what_it_scored(trained_elsewhere):
    cwd = trained_elsewhere
    line = (
        "evaluate spec.yaml --checkpoint latest --backend torch --run-dir elsewhere "
        "--set data.validation_split=0.5 data.eval_batch_size=7 --set seed=0"
    )
    done = run_cli(line, cwd)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "checkpoint: elsewhere/tiny/" in out and "/checkpoints/step-12 (step 12)" in out
    assert "data: the validation split (0.5 of random:classification, 128 samples)" in out
    assert "validation metrics:" in out and "val_accuracy" in out
    no_split = run_cli(line.replace("validation_split=0.5", "validation_split=0"), cwd)
    assert no_split.returncode == 0, no_split.stderr
    assert "data: all of random:classification, the training data" in no_split.stdout
    assert "training metrics:" in no_split.stdout and "train_loss" in no_split.stdout


def test_predict_takes_set_and_run_dir(trained_elsewhere):
    cwd = trained_elsewhere
    done = run_cli(
        "predict spec.yaml --checkpoint latest --backend jax --run-dir elsewhere "
        "--set data.options.samples=64 data.eval_batch_size=5 --output p.npy",
        cwd,
    )
    assert done.returncode == 0, done.stderr
    assert "checkpoint: elsewhere/tiny/" in done.stdout
    assert np.load(cwd / "p.npy").shape == (64, 3)


def test_compare_takes_several_sets_per_flag_and_run_dir(tmp_path):
    spec = tiny_spec()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = run_cli(
        "compare spec.yaml --backends torch --run-dir plots --json rows.json "
        "--set trainer.max_epochs=1 data.batch_size=64",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows[0]["loss_curve"]) == 1
    assert list((tmp_path / "plots" / "tiny").glob("compare-*.png"))


REFUSED = {
    "evaluate-set-malformed": (
        "evaluate spec.yaml --checkpoint latest --set seed",
        Refusal(fragments=("--set expects key=value",)),
    ),
    "evaluate-set-unknown-field": (
        "evaluate spec.yaml --checkpoint latest --set trainer.nope=1",
        Refusal(fragments=("trainer.nope",)),
    ),
    "evaluate-run-dir-empty": (
        "evaluate spec.yaml --checkpoint latest --run-dir nowhere",
        Refusal(fragments=("latest: no checkpoint under nowhere/tiny", "--run-dir")),
    ),
    "predict-set-bad-yaml": (
        "predict spec.yaml --checkpoint latest --set data.batch_size=[1",
        Refusal(fragments=("--set data.batch_size=[1",)),
    ),
    "compare-set-bad-value": (
        "compare spec.yaml --backends torch --set data.batch_size=-1",
        Refusal(fragments=("data.batch_size",)),
    ),
}


@pytest.mark.parametrize("line, expected", REFUSED.values(), ids=REFUSED.keys())
def test_bad_inference_flags_are_refused(line, expected, tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec()), encoding="utf-8")
    before = snapshot(tmp_path)
    assert_refused(run_cli(line, tmp_path), expected, before, tmp_path)
