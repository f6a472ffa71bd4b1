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
    source_packages = {
        "core": "crosstrain",
        "backends": "crosstrain/backends",
        "plugins": "crosstrain/plugins",
        "conformance": "crosstrain/conformance",
    }
    expected = [
        f"{prefix}/{init.parent.relative_to(ROOT / folder).as_posix()}/__init__.py".replace(
            "/./", "/"
        )
        for folder, prefix in source_packages.items()
        for init in (ROOT / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts
    ]
    assert "crosstrain/nn/layers/__init__.py" in expected
    data_files = [  # every non-Python file the code reads beside itself
        f"{prefix}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, prefix in source_packages.items()
        for pattern in ("*.txt", "*.template", "py.typed")
        for path in (ROOT / folder).rglob(pattern)
    ]
    assert "crosstrain/backends/jax/program_loader.py.template" in data_files
    missing = [
        name
        for name in expected + data_files + ["crosstrain/plugins/builtins.py"]
        if name not in names
    ]
    assert not missing, f"packages missing from the wheel (add them to pyproject.toml): {missing}"
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
