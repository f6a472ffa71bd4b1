"""Installs the example plugin distributions (examples/plugins/*) once per test process with
pip, into a temporary directory that the tests put on PYTHONPATH."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "plugins"
_site: Path | None = None


def install_examples() -> Path:
    """The directory holding crosstrain-numpy and crosstrain-rmsnorm, installed by pip."""
    global _site
    if _site is None:
        site = Path(tempfile.mkdtemp(prefix="crosstrain-example-plugins-"))
        atexit.register(shutil.rmtree, site, ignore_errors=True)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-compile",
                "--target",
                str(site),
                str(EXAMPLES / "crosstrain-numpy"),
                str(EXAMPLES / "crosstrain-rmsnorm"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        _site = site
    return _site


def make_distribution(site: Path, name: str, module_source: str, entry: str | None = None) -> None:
    """A real installed distribution (dist-info with a `crosstrain` entry point) in `site`."""
    (site / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[crosstrain]\n{name} = {entry or name}\n")


BROKEN_BACKEND = '''
"""numpy-broken: the numpy example backend with a wrong Dense forward (for the suite's own tests)."""
from crosstrain import hookimpl
from crosstrain_numpy import NumpyBackend
from crosstrain_numpy import layers


class WrongDense(layers.Dense):
    def forward(self, params, x, training):
        return super().forward(params, x, training) * 1.01


def make_layer(name, layer):
    return WrongDense(name, layer) if layer.type == "Dense" else layers.Activation(
        name, {"ReLU": "relu", "Tanh": "tanh"}[layer.type]
    )


class BrokenBackend(NumpyBackend):
    name = "numpy-broken"

    def build(self, spec, env):
        from crosstrain_numpy import program

        program.make_layer = make_layer
        return super().build(spec, env)


@hookimpl
def crosstrain_add_backends():
    return [BrokenBackend()]
'''
