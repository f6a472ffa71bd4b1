"""The callbacks named in `trainer.callbacks` (lr_monitor, grad_norm, timer, throughput), the
`collect_metrics` hook and best-k checkpoints, on real fits with tiny specs."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import crosstrain as ct
import numpy as np
import pytest
from conftest import ROOT, run_python, tiny_spec
from crosstrain.errors import SpecError, UnsupportedFeature


def _spec(callbacks: list, **trainer: object) -> dict:
    spec = tiny_spec()
    spec["trainer"] = {**spec["trainer"], "callbacks": callbacks, **trainer}
    return spec


# -- spec and registry ------------------------------------------------------------------------


def test_callbacks_in_the_spec_are_validated_with_field_paths() -> None:
    with pytest.raises(SpecError) as err:
        ct.load_spec(_spec(["lr_monitr", {"name": "timer", "max_time": "ten minutes"}]))
    paths = {issue.path: issue.message for issue in err.value.issues}
    assert "did you mean 'lr_monitor'" in paths["trainer.callbacks[0].name"]
    assert "HH:MM:SS" in paths["trainer.callbacks[1].max_time"]
    with pytest.raises(SpecError) as err:
        ct.load_spec(_spec([{"name": "timer", "max_time": 5, "intervall": "step"}]))
    assert [i.path for i in err.value.issues] == ["trainer.callbacks[0].intervall"]

    spec = ct.load_spec(_spec(["grad_norm", {"name": "timer", "max_time": "01:00:30"}]))
    assert spec.trainer.callbacks[1].options == {"max_time": "01:00:30"}
    assert ct.load_spec(spec.to_dict()) == spec  # flat items round-trip
    changed = spec.override({"trainer.callbacks[1].max_time": "0:0:2"})
    assert changed.trainer.callbacks[1].options["max_time"] == "0:0:2"
    from crosstrain.plugins.monitors import TimerOptions

    assert TimerOptions(max_time="01:00:30").max_time == 3630.0
    assert TimerOptions(max_time="1:00:00:00").max_time == 86400.0


def test_crosstrain_plugins_lists_the_callbacks() -> None:
    done = run_python("from crosstrain.cli.main import main; main(['plugins'])", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "callbacks: lr_monitor, grad_norm, timer, throughput" in done.stdout


# -- lr_monitor and collect_metrics -------------------------------------------------------------


class _Recorder(ct.Callback):
    """Reads what torch's optimizer used at each step, and adds its own value through the hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float, float]] = []

    def on_batch_end(self, trainer, stage, logs) -> None:
        if stage == "train" and logs:
            used = trainer.program.optimizer.param_groups[0]["lr"]
            self.seen.append((trainer.global_step, logs["lr"], used))

    def collect_metrics(self, trainer, interval):
        return {"my_step": float(trainer.global_step)} if interval == "epoch" else None


def test_lr_monitor_follows_warmup_and_cosine_as_torch_applies_it(tmp_path: Path) -> None:
    spec = _spec(["lr_monitor"], log_every_n_steps=1, max_epochs=2)
    spec["schedule"] = {"name": "cosine", "warmup_steps": 3, "min_ratio": 0.1}
    recorder = _Recorder()
    result = ct.fit(spec, backend="torch", run_dir=tmp_path, callbacks=[recorder])
    total, base = 12, 0.01  # 192 training rows / 32 per batch × 2 epochs
    assert [step for step, _, _ in recorder.seen] == list(range(1, total + 1))
    for step, logged, used in recorder.seen:
        s = step - 1  # updates before the one just applied
        if s < 3:
            expected = base * (s + 1) / 3
        else:
            progress = (s - 3) / (total - 3)
            expected = base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        assert logged == pytest.approx(expected, rel=1e-12)
        assert logged == pytest.approx(used, rel=1e-12)
    assert [h["lr"] for h in result.history] == [recorder.seen[5][1], recorder.seen[11][1]]
    assert [h["my_step"] for h in result.history] == [6.0, 12.0]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    epoch_rows = [r for r in rows if r["stage"] == "epoch"]
    assert float(epoch_rows[-1]["lr"]) == pytest.approx(result.history[-1]["lr"])
    assert sum(1 for r in rows if r["stage"] == "step" and r["lr"]) == total


# -- grad_norm ----------------------------------------------------------------------------------


def test_grad_norm_is_the_norm_before_clipping_from_torch_autograd() -> None:
    import torch
    from crosstrain.nn.model import init_params

    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    spec = _spec(["grad_norm"], log_every_n_steps=1, max_steps=1)
    spec["data"] = {"batch_size": 32, "shuffle": False}
    spec["optimizer"] = {"name": "sgd", "lr": 0.1, "clip_norm": 1e-3}
    seen = []

    class Logs(ct.Callback):
        def on_batch_end(self, logs) -> None:
            seen.append(logs)

    ct.fit(spec, backend="torch", data=(x, y), run_dir=False, callbacks=[Logs()])

    params = init_params(ct.load_spec(spec).model, 0)
    first = torch.nn.Linear(8, 16)
    second = torch.nn.Linear(16, 3)
    with torch.no_grad():
        for layer, name in ((first, "dense_0"), (second, "dense_2")):
            layer.weight.copy_(torch.from_numpy(params[f"{name}/kernel"].T))
            layer.bias.copy_(torch.from_numpy(params[f"{name}/bias"]))
    model = torch.nn.Sequential(first, torch.nn.ReLU(), second)
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[:32])), torch.tensor(y[:32]))
    loss.backward()
    expected = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()))
    assert expected > 1e-2  # far above clip_norm: the logged value is taken before clipping
    assert seen[0]["train_grad_norm"] == pytest.approx(expected, rel=1e-5)


def test_grad_norm_agrees_between_torch_and_jax() -> None:
    spec = _spec(["grad_norm"], max_epochs=1)
    spec["optimizer"] = {"name": "adam", "lr": 0.01, "clip_norm": 0.5}
    torch_run = ct.fit(spec, backend="torch", run_dir=False)
    jax_run = ct.fit(spec, backend="jax", run_dir=False)
    expected = torch_run.history[0]["train_grad_norm"]
    assert expected > 0.5
    assert jax_run.history[0]["train_grad_norm"] == pytest.approx(expected, rel=1e-4)


def test_grad_norm_on_keras_jax_matches_torch() -> None:
    spec = _spec(["grad_norm"], max_epochs=1)
    code = (
        "import json, crosstrain as ct\n"
        f"r = ct.fit({spec!r}, backend='keras:jax', run_dir=False)\n"
        "print(json.dumps(r.history[0]['train_grad_norm']))"
    )
    done = run_python(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    torch_run = ct.fit(spec, backend="torch", run_dir=False)
    keras_value = json.loads(done.stdout.strip().splitlines()[-1])
    assert keras_value == pytest.approx(torch_run.history[0]["train_grad_norm"], rel=1e-4)


def test_a_backend_without_grad_norm_refuses_it_up_front() -> None:
    from crosstrain.plugin.protocol import Capabilities

    spec = ct.load_spec(_spec(["grad_norm"]))
    declared = Capabilities(layers=frozenset({"Dense", "ReLU"}))
    with pytest.raises(UnsupportedFeature, match="grad_norm"):
        declared.check(spec, "numpy")
    Capabilities(layers=frozenset({"Dense", "ReLU"}), grad_norm=True).check(spec, "numpy")


# -- timer --------------------------------------------------------------------------------------


class _Slow(ct.Callback):
    def on_batch_end(self, stage) -> None:
        if stage == "train":
            time.sleep(0.02)


def test_timer_stops_at_a_step_boundary_and_its_clock_survives_resume(tmp_path: Path) -> None:
    spec = _spec([{"name": "timer", "max_time": 0.2}], max_epochs=50)
    started = time.monotonic()
    first = ct.fit(spec, backend="torch", run_dir=tmp_path, callbacks=[_Slow()])
    assert first.stopped_early
    steps = first.history[-1]["step"]
    assert 1 <= steps < 50 * 6 and first.last_checkpoint is not None
    assert steps * 0.02 < time.monotonic() - started < 0.2 + 10  # stopped soon after the budget
    saved = json.loads((first.last_checkpoint / "trainer.json").read_text())
    assert saved["callbacks"]["Timer"]["elapsed"] >= 0.2
    assert saved["batch_in_epoch"] == steps % 6  # the position inside the epoch is kept

    resumed = ct.fit(spec, backend="torch", run_dir=tmp_path, resume=first.last_checkpoint)
    assert resumed.stopped_early
    assert resumed.history[-1]["step"] == steps + 1  # budget already spent: one step, then stop


# -- throughput and FLOPs -----------------------------------------------------------------------


def test_flop_estimate_matches_a_hand_count() -> None:
    from crosstrain.nn.flops import forward_flops, train_flops_per_sample

    mlp = ct.load_spec(tiny_spec()).model  # Dense 8→16, ReLU, Dense 16→3
    assert forward_flops(mlp) == 2 * (8 * 16 + 16 * 3)
    assert train_flops_per_sample(mlp) == 3 * 2 * (8 * 16 + 16 * 3)
    conv = ct.load_spec(
        tiny_spec(
            model={
                "input_shape": [6, 6, 2],
                "layers": [
                    {"type": "Conv2D", "filters": 4, "kernel_size": 3},  # → 4×4×4
                    {"type": "Flatten"},
                    {"type": "Dense", "units": 5},
                ],
            }
        )
    ).model
    assert forward_flops(conv) == 2 * (16 * 9 * 2 * 4) + 2 * (64 * 5)
    attention = ct.load_spec(
        tiny_spec(
            model={
                "input_shape": [5, 8],
                "layers": [{"type": "MultiHeadSelfAttention", "num_heads": 2, "head_dim": 4}],
            }
        )
    ).model
    assert forward_flops(attention) == 2 * (4 * 5 * 8 * 8) + 2 * (2 * 5 * 5 * 8)


def test_throughput_reports_samples_and_flops_per_second() -> None:
    spec = _spec(["throughput"], max_epochs=2, log_every_n_steps=2)
    pulls = []

    class Logs(ct.Callback):
        def on_batch_end(self, stage, logs) -> None:
            if stage == "train" and logs:
                pulls.append(logs)

    result = ct.fit(spec, backend="torch", run_dir=False, callbacks=[Logs()])
    per_sample = 3 * 2 * (8 * 16 + 16 * 3)
    assert len(pulls) == 6 and all(p["samples_per_sec"] > 0 for p in pulls)
    for row in [*pulls, *result.history]:
        assert row["flops_per_sec"] == pytest.approx(per_sample * row["samples_per_sec"])
    assert all(h["samples_per_sec"] > 0 for h in result.history)


# -- best-k checkpoints -------------------------------------------------------------------------


def _kept(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-")}


def _expected(history: list[dict], k: int, keep: int) -> set[str]:
    ranked = sorted(history, key=lambda h: -h["val_loss"])[:k]  # mode max: sorted is stable
    return {f"step-{h['step']}" for h in ranked + history[-keep:]}


def test_save_top_k_keeps_the_k_best_and_the_last_across_resume(tmp_path: Path) -> None:
    checkpoint = {"keep": 1, "save_top_k": 2, "monitor": "val_loss", "mode": "max"}
    spec = _spec([], max_epochs=4, checkpoint=checkpoint)
    first = ct.fit(spec, backend="torch", run_dir=tmp_path)
    assert _kept(tmp_path) == _expected(first.history, 2, 1)
    assert len(_kept(tmp_path)) == 3
    stored = json.loads((first.last_checkpoint / "trainer.json").read_text())
    top = stored["callbacks"]["ModelCheckpoint"]["top_k"]
    best = sorted(first.history, key=lambda h: -h["val_loss"])[:2]
    assert [value for value, _ in top] == [h["val_loss"] for h in best]

    more = {**spec, "trainer": {**spec["trainer"], "max_epochs": 6}}
    resumed = ct.fit(more, backend="torch", run_dir=tmp_path, resume=first.last_checkpoint)
    assert len(resumed.history) == 6
    assert _kept(tmp_path) == _expected(resumed.history, 2, 1)


def test_keep_best_alone_still_means_one_best() -> None:
    spec = ct.load_spec(_spec([]))
    assert spec.trainer.checkpoint.top_k == 1
    off = ct.load_spec(_spec([], checkpoint={"keep_best": False}))
    assert off.trainer.checkpoint.top_k == 0
    explicit = ct.load_spec(_spec([], checkpoint={"keep_best": False, "save_top_k": 3}))
    assert explicit.trainer.checkpoint.top_k == 3
