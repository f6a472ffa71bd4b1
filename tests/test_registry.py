"""Plugins: entry points load one by one, a broken plugin is reported with its cause and
everything else keeps working; `import crosstrain` imports no framework."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from conftest import run_python, tiny_spec

FRAMEWORKS = ("torch", "jax", "flax", "optax", "keras", "tensorflow")


def make_distribution(site: Path, name: str, module_source: str, entry: str | None = None) -> None:
    """A real installed distribution (dist-info with entry points) on a directory of sys.path."""
    (site / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[crosstrain]\n{name} = {entry or name}\n")


def test_import_crosstrain_loads_no_framework():
    names = repr(FRAMEWORKS)
    done = run_python(
        f"import sys, crosstrain, crosstrain.backends.torch\nprint([m for m in {names} if m in sys.modules])"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_broken_plugins_are_reported_and_fit_still_works(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "ct_raises", "raise RuntimeError('boom at import')\n")
    make_distribution(
        site,
        "ct_typo",
        """
        from crosstrain import hookimpl
        @hookimpl
        def on_epoch_ned(trainer):
            pass
    """,
    )
    make_distribution(
        site,
        "ct_bad_signature",
        """
        from crosstrain import hookimpl
        @hookimpl
        def on_epoch_end(trainer, nonsense_argument):
            pass
    """,
    )
    make_distribution(
        site,
        "ct_good",
        """
        from crosstrain import hookimpl
        def double_mse(xp, outputs, targets):
            return 2 * xp.mean((outputs - targets) ** 2)
        @hookimpl
        def crosstrain_add_losses(registry):
            registry.losses.add("double_mse", double_mse)
    """,
    )
    code = textwrap.dedent(f"""
        import json, crosstrain as ct
        from crosstrain.plugin.registry import get_registry
        registry = get_registry()
        broken = {{b.name: [b.entry_point, b.error] for b in registry.broken}}
        result = ct.fit({tiny_spec()!r}, backend="torch", run_dir=False)
        print(json.dumps({{"broken": broken, "losses": registry.losses.names(), "acc": result.metrics["val_accuracy"]}}))
    """)
    done = run_python(code, env={"PYTHONPATH": str(site)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    broken = report["broken"]
    assert broken["ct_raises"] == ["ct_raises", "RuntimeError: boom at import"]
    assert "on_epoch_ned" in broken["ct_typo"][1]
    assert "nonsense_argument" in broken["ct_bad_signature"][1]
    assert "ct_good" not in broken and "double_mse" in report["losses"]
    assert 0.0 <= report["acc"] <= 1.0


def test_autoload_can_be_disabled(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "ct_side_effect", "open('imported.flag', 'w').write('x')\n")
    code = "from crosstrain.plugin.registry import get_registry\nprint(len(get_registry().broken))"
    done = run_python(
        code, env={"PYTHONPATH": str(site), "CROSSTRAIN_DISABLE_PLUGIN_AUTOLOAD": "1"}, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "imported.flag").exists()
    done = run_python(code, env={"PYTHONPATH": str(site)}, cwd=tmp_path)
    assert (tmp_path / "imported.flag").exists()


def test_hookspecs_are_all_documented():
    from crosstrain.plugin import hookspecs

    specs = [getattr(hookspecs, n) for n in dir(hookspecs) if n.startswith(("on_", "crosstrain_"))]
    assert len(specs) >= 14
    for spec in specs:
        assert spec.__doc__ and len(spec.__doc__.strip().splitlines()) >= 3, spec.__name__
