"""The shape of core/: its subpackages import each other in one direction only, and no module of
core imports an ML framework (backends do). Read from the source, so a new upward import or a
new framework import fails here with the file and line that added it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core"

LAYERS = ["errors", "output", "plugin", "nn", "data", "spec", "checkpoint", "train", "api", "cli"]
"""Lowest first: a module may import its own subpackage and those listed before it. The
package's `__init__` (lazy public names) sits above all of them."""

FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "optax", "keras", "tensorflow", "tf_keras", "ray")
"""Libraries core never imports; Ray lives in plugins/ray_launcher.py only."""


def _module_name(path: Path) -> str:
    parts = ["crosstrain", *path.relative_to(CORE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _runtime_imports(path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every import in `path` that runs, at module level or inside a
    function; imports under `if TYPE_CHECKING:` are annotations only and not counted."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    annotation_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            annotation_only.update(id(sub) for sub in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in annotation_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return found


MODULES = {_module_name(path): path for path in sorted(CORE.rglob("*.py"))}


def test_every_core_module_is_in_a_known_layer() -> None:
    unknown = {_layer(m) for m in MODULES} - set(LAYERS) - {"__init__"}
    assert not unknown, f"add the new subpackage(s) {sorted(unknown)} to LAYERS in this file"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module: str) -> None:
    here = _layer(module)
    if here == "__init__":
        return
    upward = []
    for target, line in _runtime_imports(MODULES[module]):
        if target not in MODULES or _layer(target) in (here, "__init__"):
            continue
        if LAYERS.index(_layer(target)) > LAYERS.index(here):
            upward.append(f"{MODULES[module].relative_to(CORE.parent)}:{line} imports {target}")
    assert not upward, f"{here} sits below what it imports:\n" + "\n".join(upward)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_core_never_imports_a_framework(module: str) -> None:
    framework = [
        f"{MODULES[module].relative_to(CORE.parent)}:{line} imports {target}"
        for target, line in _runtime_imports(MODULES[module])
        if target.split(".")[0] in FRAMEWORKS
    ]
    assert not framework, "\n".join(framework)


def test_a_rule_breaking_import_is_caught(tmp_path: Path) -> None:
    """The checks above can fail: an upward import and a framework import in a module."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from crosstrain.train.trainer import Trainer\n    import torch\n")
    imports = dict(_runtime_imports(bad))
    assert imports["crosstrain.train.trainer"] == 2 and imports["torch"] == 3
    assert LAYERS.index(_layer("crosstrain.train.trainer")) > LAYERS.index("nn")


def test_using_the_api_loads_no_framework() -> None:
    """Importing crosstrain, loading a spec and summarising it load no framework module."""
    code = (
        "import sys, crosstrain as ct\n"
        "spec = ct.load_spec('examples/digits_mlp.yaml')\n"
        "from crosstrain.spec.summary import summary\n"
        "assert 'Total params' in summary(spec)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=CORE.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
