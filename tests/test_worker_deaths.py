"""A worker killed by a signal is named in one line by the launcher that started it: crosstrain's
own (jax, keras:jax: `supervise`) and torchrun's wrapper (torch), with real processes."""

from __future__ import annotations

import subprocess
import sys

from crosstrain.train.workers import supervise

SURVIVOR = "import time; time.sleep(60)"
VICTIM = "import os, signal, time; time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)"


def test_supervise_names_the_killed_worker_and_stops_the_others(capfd):
    python = [sys.executable, "-c"]
    status = supervise([([*python, SURVIVOR], {}), ([*python, VICTIM], {})])
    err = capfd.readouterr().err
    assert status != 0
    lines = [line for line in err.splitlines() if "was killed" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: worker 1 (pid ") and "killed by SIGKILL" in lines[0]
    assert "--resume latest" in lines[0]


def test_torchrun_names_the_killed_worker(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, signal, time\n"
        "if os.environ['RANK'] == '1':\n"
        "    time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)\n"
        "time.sleep(60)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "crosstrain.backends.torch.torchrun", "--nproc-per-node", "2"]
        + ["--monitor-interval", "0.2", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "was killed" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: worker 1 (pid ") and "SIGKILL" in lines[0]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
