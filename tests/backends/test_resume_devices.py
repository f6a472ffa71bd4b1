"""Resume on another number of processes (issue 17 item 3), torch on gloo: a checkpoint written
mid-epoch by 2 DDP processes resumes in 1, and one written by 1 process resumes in 2, each
ending at the state of the uninterrupted run (rtol 1e-5, the DDP-vs-one-process tolerance).

Every rank draws the same global batch from core's seeded order (`epoch_order(seed, epoch)`)
and a checkpoint stores the global position (`epoch`, `batch_in_epoch`, `global_step`), not a
rank's, so the data order goes on unchanged whatever the new number of processes is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

import crosstrain as ct  # noqa: E402
from crosstrain.checkpoint.format import read_checkpoint  # noqa: E402
from test_torch_distributed import SPEC, assert_same_state, worker_env  # noqa: E402

MID_EPOCH = 10
"""7 batches per epoch: step 10 is batch 3 of epoch 1."""

SAVER = '''
import crosstrain as ct


class SaveAtStep(ct.Callback):
    """Writes a checkpoint after global step `step` (mid-epoch) and trains on."""

    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer, stage):
        if stage == "train" and trainer.global_step == self.step:
            trainer.save_checkpoint()
'''

SCRIPT = """
import sys
import crosstrain as ct
from saver import SaveAtStep

ct.fit(sys.argv[1], backend="torch", run_dir=sys.argv[2], callbacks=[SaveAtStep(int(sys.argv[3]))])
# as the docs ask of a script under torchrun: torch 2.13's gloo can abort a finished rank at
# interpreter exit ("terminate called without an active exception")
ct.end_worker(0)
"""


def two_process_run(tmp_path: Path) -> Path:
    """The uninterrupted 2-process DDP run (torchrun), with a checkpoint at MID_EPOCH too."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    (tmp_path / "saver.py").write_text(SAVER, encoding="utf-8")
    (tmp_path / "train.py").write_text(SCRIPT, encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "train.py", "spec.yaml", "runs/two", str(MID_EPOCH)]
    done = subprocess.run(
        command, cwd=tmp_path, env=worker_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp_path / "runs/two/checkpoints"


@pytest.mark.slow  # ~32 s on the 2-core machine: two torchrun runs and two in-process fits
def test_two_processes_resume_in_one_and_one_in_two(tmp_path: Path) -> None:
    sys.path.insert(0, str(tmp_path))
    try:
        checkpoints = two_process_run(tmp_path)
        from saver import SaveAtStep  # the module the workers used
    finally:
        sys.path.remove(str(tmp_path))
    two_final, _ = read_checkpoint(checkpoints / "step-14")
    _, meta = read_checkpoint(checkpoints / f"step-{MID_EPOCH}")
    assert (meta["epoch"], meta["batch_in_epoch"], meta["global_step"]) == (1, 3, MID_EPOCH)

    # 2 -> 1: one process continues the 2-process run from the middle of epoch 1
    spec = ct.load_spec(SPEC)
    resumed = ct.fit(spec, backend="torch", run_dir=False, resume=checkpoints / f"step-{MID_EPOCH}")
    single = ct.fit(
        spec, backend="torch", run_dir=tmp_path / "runs/one", callbacks=[SaveAtStep(MID_EPOCH)]
    )
    assert resumed.state.step == single.state.step == 14
    assert_same_state(resumed.state, two_final)
    assert_same_state(resumed.state, single.state)

    # 1 -> 2: two processes continue the 1-process run from the middle of epoch 1
    copied = tmp_path / "runs/one-copy"
    shutil.copytree(tmp_path / "runs/one", copied)
    command = [sys.executable, "-m", "crosstrain.cli", "fit", "spec.yaml", "--devices", "2"]
    command += ["--resume", str(copied / "checkpoints" / f"step-{MID_EPOCH}")]
    done = subprocess.run(
        command, cwd=tmp_path, env=worker_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        f"resumed from {copied}/checkpoints/step-{MID_EPOCH} (epoch 1, step {MID_EPOCH})"
        in done.stdout
    )
    two_from_one, meta = read_checkpoint(copied / "checkpoints/step-14")
    assert meta["global_step"] == 14
    assert_same_state(two_from_one, single.state)
