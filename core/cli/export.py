"""`crosstrain export CKPT --to FORMAT`: a checkpoint's model in a framework's native format.

The format is one a registered backend declares (`Capabilities.exports`); the built-ins:
`torch` (the module's `state_dict` as safetensors), `flax` (the nnx state as flat
safetensors, `crosstrain.backends.jax.export.load_flax_state` reads it back) and `keras` (a
`.keras` file of stock layers). The backend builds the model, loads the checkpoint and writes
the file (`Program.export`); core imports no framework.

The model is rebuilt from the `model` section of the spec stored in the checkpoint (plain
data: layer types of the registry, no code named in the stored spec is imported), or from the
spec given with `--spec`.

Where the file goes (`output_path`): `--output FILE` is that file; `--output DIR/` (an
existing directory, or a path ending in a separator) and no `--output` (the working directory)
put `<name>-step-<N><suffix>` in that directory, `<name>` being the model's spec name. The
file must resolve inside its output directory. A name that is not one plain path segment
(`crosstrain.spec.schema.name_problem`: `/abs`, `../x`, `a/b`, empty, `.`/`..`, control characters,
over 100 characters) is refused: a spec cannot hold one and a checkpoint that does is refused
when read (its `trainer.json` is checked field by field); `output_path` checks the name again
before it becomes a file name. A path that a symbolic link leads outside the directory is
refused too. Export writes nothing but the one file (and the output directory, if missing),
through a hidden sibling directory renamed into place, so a kill never leaves a torn file.

Example:
    $ crosstrain export runs/digits-mlp/20260101-120000/checkpoints/step-460 --to torch
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

from crosstrain.errors import CheckpointError, CrosstrainError, SpecError
from crosstrain.plugin.command import Command

NAME = "export"
HELP = "write the model of a checkpoint in a framework's native format"


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the arguments of `crosstrain export`."""
    parser.add_argument("checkpoint", help="a step-<N> checkpoint directory")
    parser.add_argument(
        "--to",
        required=True,
        metavar="FORMAT",
        help="a native format a backend declares (built-ins: torch, torch-program, onnx, flax, keras)",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="the file to write, or a directory (ending in /) for <spec name>-step-<N><suffix> "
        "(default: that name in the working directory)",
    )
    parser.add_argument(
        "--spec", metavar="SPEC", help="build the model from this spec instead of the stored one"
    )


def run(args: argparse.Namespace) -> int:
    """Runs `crosstrain export`; returns the exit status."""
    path = export(args.checkpoint, args.to, args.output, spec=args.spec)
    print(f"exported {args.checkpoint} as {args.to}: {path}")
    return 0


def model_spec(meta: dict[str, Any], spec: Any = None) -> Any:
    """The spec to rebuild the model from: `spec` if given, else the stored model section only
    (with the stored name, which `read_checkpoint` has checked is one path segment)."""
    from crosstrain.spec.schema import load_spec

    if spec is not None:
        return load_spec(Path(spec) if isinstance(spec, str) else spec)
    stored = meta.get("spec")
    if not isinstance(stored, dict) or not isinstance(stored.get("model"), dict):
        raise CheckpointError("the checkpoint stores no model spec; pass the spec with --spec")
    data = {"name": stored.get("name", "model"), "model": stored["model"]}
    from crosstrain.plugin.registry import references_refused

    try:
        with references_refused("a checkpoint's spec never imports code; pass --spec"):
            return load_spec(data)
    except SpecError as err:
        raise CheckpointError(
            f"the model spec stored in the checkpoint is invalid: {err}"
        ) from None


def output_path(output: str | Path | None, name: Any, step: int, suffix: str) -> Path:
    """The file export writes (see the module doc), checked to lie inside its directory.

    Raises:
        CrosstrainError: the default name is not one plain path segment, the file would
            resolve outside its directory, or it is an existing directory.
    """
    from crosstrain.spec.schema import name_problem

    text = None if output is None else os.fspath(output)
    if text is None or text.endswith(("/", os.sep)) or Path(text).is_dir():
        directory = Path(text or ".")
        problem = name_problem(name)
        if problem:
            raise CrosstrainError(
                f"the model name {str(name)[:80]!r} {problem}, so it cannot name the output "
                "file; pass --output FILE"
            )
        file_name = f"{name}-step-{step}{suffix}"
        path = directory / file_name
    else:
        path = Path(text)
        directory = path.parent
    inside, resolved = directory.resolve(), path.resolve()
    if resolved.parent != inside:
        raise CrosstrainError(
            f"--output: {path} resolves to {resolved}, outside {inside} (a symbolic link?); "
            "export writes only inside its output directory"
        )
    if resolved.is_dir():
        raise CrosstrainError(f"--output: {path} is a directory")
    return path


def export_backend(to: str) -> tuple[str, Any]:
    """The first registered backend that declares the export format `to`, and the format.

    Raises:
        CrosstrainError: no registered backend declares `to`.
    """
    from crosstrain.plugin.registry import get_registry

    registry = get_registry()
    declared: list[str] = []
    for name in registry.backends.names():
        for found in registry.backends.get(name).capabilities().exports:
            if found.name == to:
                return name, found
            declared.append(found.name)
    raise CrosstrainError(
        f"--to: no backend exports {to!r}; formats: {', '.join(sorted(set(declared))) or 'none'}"
    )


def export(
    checkpoint: str | Path, to: str, output: str | Path | None = None, *, spec: Any = None
) -> Path:
    """Writes the checkpoint's model in the native format `to`; returns the file written.

    Raises:
        CrosstrainError: unknown format, or an output path export may not write (`output_path`).
        CheckpointError: the checkpoint is broken or does not fit the model.
        BackendUnavailable: the framework of `to` is not installed.
    """
    from crosstrain import api
    from crosstrain.checkpoint.format import read_checkpoint

    backend, found = export_backend(to)
    state, meta = read_checkpoint(checkpoint)
    built = model_spec(meta, spec)
    out = output_path(output, built.name, state.step, found.suffix)
    program = api.build(built, backend=backend)
    program.set_state(state)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under its own name in a hidden sibling directory, then renamed over `out`: a kill
    # mid-write leaves that directory, never a torn file at `out`.
    staging = out.with_name(f".export-{out.name}-{os.getpid()}")
    staging.mkdir(exist_ok=True)
    try:
        written = Path(program.export(staging / out.name, to))
        os.replace(written, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


COMMANDS = (Command(NAME, HELP, configure, run),)
