"""Native `.keras` files from crosstrain states: the model of a spec, holding a state's weights.

The file holds only stock Keras layers (see `model.py`), so `keras.saving.load_model(path,
safe_mode=True)` opens it on any engine without crosstrain installed. It is written in float32
whatever the training precision, without the optimizer.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crosstrain.checkpoint.format import CanonicalState, check_compatible
from crosstrain.errors import CrosstrainError, UnsupportedFeature
from crosstrain.plugin.protocol import ExportFormat

from .device import engine_of, use_engine

if TYPE_CHECKING:
    from .program import KerasProgram

FORMATS = (
    ExportFormat(
        "keras",
        ".keras",
        "a .keras file of stock Keras layers; load with "
        "keras.saving.load_model(path, safe_mode=True) on any engine",
    ),
)


def export(program: KerasProgram, path: Path, format: str) -> Path:
    """Writes `program`'s model with its current weights in `format` (only `keras`) to `path`.

    Raises:
        UnsupportedFeature: `format` is not one of `FORMATS`.
    """
    if format != "keras":
        raise UnsupportedFeature(program.backend, f"export to {format!r}", ["keras"])
    return export_keras(program.spec, program.get_state(), path, program.backend)


def export_keras(
    spec: Any, state: CanonicalState, path: str | Path, backend: str = "keras"
) -> Path:
    """Writes `path` (ending in `.keras`) with the spec's model and the state's parameters.

    Args:
        spec: a validated Spec with a `model` section.
        state: canonical state from any backend (a checkpoint's, or `program.get_state()`).
        path: the file to write, any name (`.keras` or not: the file is a `.keras` zip either way).
        backend: `keras` or `keras:<engine>`: the engine that writes the file.

    Raises:
        CrosstrainError: the spec has no model.
        CheckpointError: the state does not fit the model.
        EngineConflict: Keras is already imported here with another engine.
    """
    path = Path(path)
    if spec.model is None:
        raise CrosstrainError("export needs a spec with a model section")
    if spec.model.is_graph and any(n.tie for n in spec.model.nodes):
        raise UnsupportedFeature(
            backend, "export to 'keras' of a tied Dense (`tie`: no stock Keras layer holds it)"
        )
    use_engine(engine_of(backend))
    from .model import build_model

    stock = spec.model.model_copy(update={"dropout_masks": "native"})  # identical in inference
    model, refs = build_model(stock, "float32", spec.seed, backend)
    check_compatible(state, {r.name: r.shape for r in refs}, backend)
    for ref in refs:
        ref.write(state.params[ref.name])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".keras":
        model.save(path)
        return path
    # Keras saves only to names ending in .keras: write a temporary one beside the target (in
    # the same directory, so export still writes only there) and rename it to the name asked for
    temporary = path.parent / f".tmp-{secrets.token_hex(8)}-{path.name}.keras"
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
