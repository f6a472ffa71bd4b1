"""The package-dir mapping works outside editable mode: build a wheel, install it, import it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from conftest import ROOT, run_python


def test_wheel_installs_and_imports(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("crosstrain-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "crosstrain/__init__.py",
        "crosstrain/layers/__init__.py",
        "crosstrain/backends/torch/__init__.py",
        "crosstrain/plugins/builtins.py",
        "crosstrain/conformance/plugin.py",
    ):
        assert expected in names, expected
    assert not any(n.startswith(("core/", "backends/", "plugins/", "tests/")) for n in names)
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    code = (
        "import crosstrain, crosstrain.backends.torch, crosstrain.plugins.builtins\n"
        "from crosstrain.plugin.registry import get_registry\n"
        "print(crosstrain.__file__)\n"
        "print(','.join(get_registry().backends.names()))\n"
    )
    done = run_python(code, cwd=tmp_path, env={"PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"})
    assert done.returncode == 0, done.stderr
    location, backends = done.stdout.strip().splitlines()
    assert location.startswith(str(target)), location
    assert "torch" in backends.split(",")
    assert os.path.isdir(target / "crosstrain" / "backends" / "torch")
