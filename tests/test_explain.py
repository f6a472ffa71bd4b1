"""`crosstrain fit SPEC --explain` and `crosstrain.explain`: the plan before step 1, taken from
the parts that own each fact, and the same text at the top of a run's summary.txt."""

from __future__ import annotations

import pytest
import yaml
from bad_inputs import run_cli, snapshot
from crosstrain.nn.optim import applied_lr
from crosstrain.spec.resolve import load_data
from crosstrain.spec.schema import load_spec
from crosstrain.train.run_length import run_length

SPEC = {
    "name": "plan",
    "seed": 0,
    "data": {
        "source": "random:classification",
        "batch_size": 32,
        "validation_split": 0.25,
        "options": {"samples": 300, "features": 8, "classes": 3},
    },
    "model": {
        "input_shape": [8],
        "layers": [
            {"type": "Dense", "units": 16},
            {"type": "ReLU"},
            {"type": "Dense", "units": 3},
        ],
    },
    "loss": "cross_entropy",
    "optimizer": {"name": "adam", "lr": 0.01},
    "schedule": {"name": "cosine", "warmup_steps": 5, "min_ratio": 0.1},
    "trainer": {"max_epochs": 3, "progress": False, "checkpoint": {"keep": 2, "async": True}},
}


def _lines(text: str) -> dict[str, str]:
    """`topic -> text` of the plan's aligned lines (hooks keyed by hook name)."""
    found = {}
    for line in text.splitlines()[1:]:
        key, _, value = line.strip().partition("  ")
        found[key] = value.strip()
    return found


@pytest.mark.parametrize(
    "backend, execution",
    [("torch", "eager"), ("jax", "jax.jit"), ("keras:jax", "jax.jit of a stateless step")],
)
def test_cli_explain_prints_the_plan_and_writes_nothing(tmp_path, backend, execution):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    before = snapshot(tmp_path)
    done = run_cli(f"fit spec.yaml --backend {backend} --explain", tmp_path)
    assert done.returncode == 0, done.stderr
    assert snapshot(tmp_path) == before  # no run directory, no file
    assert "training" not in done.stdout and "final metrics" not in done.stdout
    plan = _lines(done.stdout)
    spec = load_spec(SPEC)
    length = run_length(spec, load_data(spec)[0])  # the owner of the run length
    assert length.steps_per_epoch == 8  # 225 training rows / 32
    assert plan["run length"] == f"8 steps per epoch x 3 epochs = {length.total_steps} steps"
    last = length.total_steps - 1
    lr = [applied_lr(spec.optimizer, spec.schedule, s, length.total_steps) for s in (0, 5, last)]
    assert plan["lr schedule"] == (
        f"adam lr 0.01, cosine: {lr[0]:.4g} at step 0, {lr[1]:.4g} after warmup (step 5), "
        f"{lr[2]:.4g} at step {last}"
    )
    assert plan["backend"].startswith(backend)
    assert execution in plan["execution"]
    assert plan["processes"].startswith("1 (this process")
    assert "written on a background thread" in plan["checkpoints"]
    assert "keep the last 2" in plan["checkpoints"]
    # hooks in the order pluggy calls them: checkpoints (retention) before the CSV row
    assert plan["on_epoch_end"] == "ModelCheckpoint, CSVLogger"
    assert plan["on_checkpoint"] == "ModelCheckpoint"
    if backend.startswith("keras"):
        assert plan["engine"] == "jax"


def test_backend_lines_replace_core_lines_fsdp_units():
    import crosstrain as ct

    spec = load_spec(SPEC).override({"trainer.devices": 2, "trainer.strategy": "fsdp"})
    plan = _lines(ct.explain(spec, backend="torch"))
    assert plan["sharding"].startswith(
        "FSDP2 across 2 ranks, units: dense_0, dense_2, then the root"
    )
    assert plan["processes"].startswith("2, one per device")
    assert plan["launcher"].startswith("torchrun")
    jax_plan = _lines(ct.explain(spec.override({"trainer.strategy": "auto"}), backend="jax"))
    assert jax_plan["sharding"].startswith("mesh axis 'data' over 2 devices")


def test_summary_txt_starts_with_the_plan(tmp_path):
    import crosstrain as ct

    spec = load_spec(SPEC).override({"trainer.max_epochs": 1})

    class Watcher(ct.Callback):
        def on_batch_end(self, trainer, stage, logs):
            pass

    result = ct.fit(spec, backend="torch", run_dir=tmp_path / "run", callbacks=[Watcher()])
    summary = (result.run_dir / "summary.txt").read_text()
    explained = ct.explain(spec, backend="torch")
    head = summary[: summary.index("\n\n")] + "\n"
    differs = [
        (a, b) for a, b in zip(head.splitlines(), explained.splitlines(), strict=True) if a != b
    ]
    # the same text, except where the run's checkpoints actually went, and the fit's own callback
    assert [a.split()[0] for a, _ in differs] == ["checkpoints", "on_batch_end"], differs
    assert f"into {tmp_path / 'run'}/checkpoints" in differs[0][0]
    assert differs[1][0].split()[1:] == ["Watcher,", "CSVLogger"]
    assert "Layer" in summary[summary.index("\n\n") :]  # the model table follows
