"""Native exports of the JAX backend: the nnx module's state as flat safetensors, and the whole
model as a stand-alone Python module that needs only jax.

`flax`: the file maps `a/b/c` (the path of each variable in `nnx.state(model)`) to its array;
`load_flax_state(model, path)` puts it back into an nnx module built for the same spec.

`jax-program`: a `.py` loader module (`program_loader.py.template` filled in) holding the model
in inference mode as a `jax.export` program (StableHLO, the weights as constants, the batch axis
symbolic, lowered for cpu and cuda) and `predict(x)`; it imports only jax and numpy.

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
    ExportFormat(
        "jax-program",
        ".py",
        "a Python module needing only jax: the model in inference mode as a jax.export program "
        "with its weights (batch axis dynamic, cpu and cuda); "
        "predict = runpy.run_path(path)['predict']; predict(x)",
    ),
)

PROGRAM_PLATFORMS = ("cpu", "cuda")
"""What a `jax-program` export is lowered for (one serialized program serves each)."""
LOADER_TEMPLATE = Path(__file__).with_name("program_loader.py.template")


def _key(path: tuple[Any, ...]) -> str:
    return "/".join(str(part) for part in path)


def export(program: JaxProgram, path: Path, format: str) -> Path:
    """Writes `program`'s nnx module in `format` (one of `FORMATS`) to `path`; returns `path`.

    Raises:
        UnsupportedFeature: `format` is not one of `FORMATS`.
    """
    if format == "jax-program":
        return export_program(program, path)
    if format != "flax":
        raise UnsupportedFeature("jax", f"export to {format!r}", [f.name for f in FORMATS])
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


def export_program(program: JaxProgram, path: Path) -> Path:
    """Writes the `jax-program` loader module (see the module docstring) to `path`."""
    import base64
    import textwrap

    import crosstrain
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export

    spec = program.spec
    params, rest = program.carry["params"], program.carry["rest"]
    from crosstrain.nn.graph import export_input

    shape, kind = export_input(spec.model, "jax", "a jax program")
    dtype = "int32" if kind == "int64" else "float32"
    (batch,) = jax_export.symbolic_shape("batch")
    predict = jax.jit(lambda x: program.predict_function(params, rest, x))
    exported = jax_export.export(predict, platforms=PROGRAM_PLATFORMS)(
        jax.ShapeDtypeStruct((batch, *shape), jnp.dtype(dtype))
    )
    blob = base64.b64encode(bytes(exported.serialize())).decode("ascii")
    text = LOADER_TEMPLATE.read_text(encoding="utf-8").format(
        name=spec.name,
        version=crosstrain.__version__,
        step=program.step,
        platforms=" and ".join(PROGRAM_PLATFORMS),
        jax=jax.__version__,
        file=path.name,
        dtype=dtype,
        shape=repr(shape),
        shape_text=", ".join(str(d) for d in shape),
        output_shape=repr(tuple(exported.out_avals[0].shape[1:])),
        blob="\n".join(textwrap.wrap(blob, 76)),
    )
    path.write_text(text, encoding="utf-8")
    return path
