"""Native exports of the JAX backend: the nnx module's state as flat safetensors.

The file maps `a/b/c` (the path of each variable in `nnx.state(model)`) to its array;
`load_flax_state(model, path)` puts it back into an nnx module built for the same spec.
`FORMATS` is declared data (no JAX import); the functions import flax when they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from crosstrain.errors import CheckpointError, UnsupportedFeature
from crosstrain.plugin.protocol import ExportFormat

if TYPE_CHECKING:
    from .program import JaxProgram

FORMATS = (
    ExportFormat(
        "flax",
        ".flax.safetensors",
        "nnx.state(model) flattened to a/b/c keys; load with "
        "crosstrain.backends.jax.export.load_flax_state(model, path)",
    ),
)


def _key(path: tuple[Any, ...]) -> str:
    return "/".join(str(part) for part in path)


def export(program: JaxProgram, path: Path, format: str) -> Path:
    """Writes `program`'s nnx module in `format` (only `flax`) to `path`; returns `path`.

    Raises:
        UnsupportedFeature: `format` is not one of `FORMATS`.
    """
    if format != "flax":
        raise UnsupportedFeature("jax", f"export to {format!r}", ["flax"])
    import numpy as np
    from flax import nnx
    from safetensors.numpy import save_file

    flat = nnx.to_flat_state(nnx.state(program.native_model))
    save_file({_key(p): np.asarray(var.get_value()) for p, var in flat}, str(path))
    return path


def load_flax_state(model: Any, path: str | Path) -> None:
    """Loads a `flax` export into an nnx module built for the same spec (in place).

    Raises:
        CheckpointError: a variable of the module is missing from the file or has another shape.
    """
    from crosstrain.checkpoint.format import check_tensor_file
    from flax import nnx
    from safetensors.numpy import load_file

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
