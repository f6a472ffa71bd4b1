"""Native exports of the torch backend: the module's `state_dict` as safetensors, and the
model as an ONNX graph (`torch.onnx.export`) that onnxruntime runs without torch or crosstrain.

`FORMATS` is declared data (no torch import); `export` imports torch when it writes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from crosstrain.errors import UnsupportedFeature
from crosstrain.plugin.protocol import ExportFormat

if TYPE_CHECKING:
    from .program import TorchProgram

FORMATS = (
    ExportFormat(
        "torch",
        ".safetensors",
        "the nn.Module's state_dict; load with "
        "module.load_state_dict(safetensors.torch.load_file(path), strict=True)",
    ),
    ExportFormat(
        "onnx",
        ".onnx",
        "an ONNX graph of the model in inference mode, float32, batch axis dynamic; run with "
        "onnxruntime.InferenceSession(path).run(None, {'x': x}) (needs the onnx and onnxscript "
        "packages to write)",
    ),
)

ONNX_OPSET = 18
"""The ONNX opset written (onnxruntime 1.16 and later run it)."""


def export(program: TorchProgram, path: Path, format: str) -> Path:
    """Writes `program`'s module in `format` (only `torch`) to `path`; returns `path`.

    Raises:
        UnsupportedFeature: `format` is not one of `FORMATS`.
    """
    if format == "onnx":
        return export_onnx(program, path)
    if format != "torch":
        raise UnsupportedFeature(program.backend, f"export to {format!r}", ["torch", "onnx"])
    from safetensors.torch import save_file

    tensors = program.native_model.state_dict()
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path))
    return path


def export_onnx(program: TorchProgram, path: Path) -> Path:
    """Writes the model as one self-contained ONNX file (input `x`, output `y`, batch axis
    dynamic), traced in inference mode on the CPU in float32; returns `path`.

    Raises:
        MissingDependency: onnx or onnxscript (what torch's exporter needs) is not installed.
        CrosstrainError: torch cannot express the model in ONNX (the exporter's reason).
    """
    import copy
    import importlib.util

    import torch
    from crosstrain.errors import CrosstrainError, MissingDependency

    for needed in ("onnx", "onnxscript"):
        if importlib.util.find_spec(needed) is None:
            raise MissingDependency("export --to onnx", needed, "onnx")
    spec = program.spec
    module = copy.deepcopy(program.native_model).to("cpu", torch.float32).eval()
    dtype = getattr(torch, spec.model.resolved_input_dtype)
    example = torch.zeros((2, *spec.model.input_shape), dtype=dtype)
    batch = torch.export.Dim("batch", min=1)
    # the exporter's deprecation notices are torch's business, not the user's
    onnx_log = logging.getLogger("torch.onnx")  # "torchvision is not installed. Skipping ..."
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            exported = torch.onnx.export(
                module,
                (example,),
                dynamic_shapes=({0: batch},),
                input_names=["x"],
                output_names=["y"],
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        except Exception as err:  # the exporter's many error types: its reason, in one line
            text = str(err).strip()
            reason = text.splitlines()[0] if text else type(err).__name__
            raise CrosstrainError(
                f"export --to onnx: torch cannot export this model: {reason}"
            ) from err
        finally:
            onnx_log.setLevel(level)
    exported.save(str(path), external_data=False)
    return path
