"""`crosstrain export CKPT --to torch|flax|keras`: a checkpoint's model in a native format.

- `torch`: the backend module's `state_dict`, saved with safetensors; it loads with
  `module.load_state_dict(safetensors.torch.load_file(path), strict=True)`.
- `flax`: the nnx module's state (`nnx.state(model)`), flattened to `a/b/c` keys in a
  safetensors file; `load_flax_state(model, path)` puts it back into an nnx module.
- `keras`: the `keras.Model` saved as `.keras` (`keras.saving.load_model`).

The model is rebuilt from the `model` section of the spec stored in the checkpoint (plain
data: layer types of the registry, no code named in the stored spec is imported), or from the
spec given with `--spec`.

Example:
    $ crosstrain export runs/digits-mlp/20260101-120000/checkpoints/step-460 --to torch
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import CheckpointError, SpecError

NAME = "export"
HELP = "write the model of a checkpoint in a framework's native format"
TARGETS = {"torch": ".safetensors", "flax": ".flax.safetensors", "keras": ".keras"}
_BACKENDS = {"torch": "torch", "flax": "jax", "keras": "keras"}


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the arguments of `crosstrain export`."""
    parser.add_argument("checkpoint", help="a step-<N> checkpoint directory")
    parser.add_argument("--to", required=True, choices=sorted(TARGETS), help="the native format")
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="where to write (default: <spec name>-step-<N> plus the format's suffix)",
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
    """The spec to rebuild the model from: `spec` if given, else the stored model section only."""
    from .spec import load_spec

    if spec is not None:
        return load_spec(Path(spec) if isinstance(spec, str) else spec)
    stored = meta.get("spec")
    if not isinstance(stored, dict) or not isinstance(stored.get("model"), dict):
        raise CheckpointError("the checkpoint stores no model spec; pass the spec with --spec")
    data = {"name": str(stored.get("name", "model")), "model": stored["model"]}
    try:
        return load_spec(data)
    except SpecError as err:
        raise CheckpointError(
            f"the model spec stored in the checkpoint is invalid: {err}"
        ) from None


def export(
    checkpoint: str | Path, to: str, output: str | Path | None = None, *, spec: Any = None
) -> Path:
    """Writes the checkpoint's model in the native format `to`; returns the file written.

    Raises:
        CheckpointError: the checkpoint is broken or does not fit the model.
        BackendUnavailable: the framework of `to` is not installed.
    """
    from . import api
    from .state import read_checkpoint

    if to not in TARGETS:
        raise ValueError(f"--to must be one of {sorted(TARGETS)}, got {to!r}")
    state, meta = read_checkpoint(checkpoint)
    built = model_spec(meta, spec)
    out = Path(output or f"{built.name}-step-{state.step}{TARGETS[to]}")
    program = api.build(built, backend=_BACKENDS[to])
    program.set_state(state)
    out.parent.mkdir(parents=True, exist_ok=True)
    if to == "torch":
        from safetensors.torch import save_file

        tensors = program.native_model.state_dict()
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(out))
    elif to == "flax":
        import numpy as np
        from flax import nnx
        from safetensors.numpy import save_file

        flat = nnx.to_flat_state(nnx.state(program.native_model))
        save_file({_key(path): np.asarray(var.get_value()) for path, var in flat}, str(out))
    else:
        program.native_model.save(str(out))
    return out


def _key(path: tuple[Any, ...]) -> str:
    return "/".join(str(part) for part in path)


def load_flax_state(model: Any, path: str | Path) -> None:
    """Loads a `--to flax` export into an nnx module built for the same spec (in place).

    Raises:
        CheckpointError: a variable of the module is missing from the file or has another shape.
    """
    from flax import nnx
    from safetensors.numpy import load_file

    from .state import check_tensor_file

    check_tensor_file(path)
    values = load_file(str(path))
    flat = nnx.to_flat_state(nnx.state(model))
    for variable_path, variable in flat:
        key = _key(variable_path)
        value = values.get(key)
        if value is None or value.shape != variable.get_value().shape:
            raise CheckpointError(
                f"{path}: no variable {key} of shape {variable.get_value().shape}"
            )
        variable.set_value(value)
    nnx.update(model, nnx.from_flat_state(flat))
