"""Native exports of the torch backend: the module's `state_dict` as safetensors, the whole
model as a `torch.export` program that torch loads without crosstrain, and as an ONNX graph
(`torch.onnx.export`) that onnxruntime runs without torch or crosstrain.

`FORMATS` is declared data (no torch import); `export` imports torch when it writes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        "torch-program",
        ".pt2",
        "the whole model as a torch.export program (graph and weights, batch axis dynamic, "
        "inference mode); load with torch.export.load(path).module(), no crosstrain needed",
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
    """Writes `program`'s module in `format` (one of `FORMATS`) to `path`; returns `path`.

    Raises:
        UnsupportedFeature: `format` is not one of `FORMATS`.
    """
    if format == "onnx":
        return export_onnx(program, path)
    if format == "torch-program":
        return export_program(program, path)
    if format != "torch":
        names = [f.name for f in FORMATS]
        raise UnsupportedFeature(program.backend, f"export to {format!r}", names)
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
    import importlib.util

    import torch
    from crosstrain.errors import CrosstrainError, MissingDependency

    for needed in ("onnx", "onnxscript"):
        if importlib.util.find_spec(needed) is None:
            raise MissingDependency("export --to onnx", needed, "onnx")
    module, example, batch = inference_module(program)
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


def inference_module(program: TorchProgram) -> tuple[Any, Any, Any]:
    """A CPU float32 copy of the model in inference mode, an example input of 2 rows and the
    dynamic batch dimension: what both program exports trace."""
    import copy

    import torch

    spec = program.spec
    module = copy.deepcopy(program.native_model).to("cpu", torch.float32).eval()
    from crosstrain.nn.graph import export_input

    shape, kind = export_input(spec.model, program.backend, "a torch program")
    example = torch.zeros((2, *shape), dtype=getattr(torch, kind))
    return module, example, torch.export.Dim("batch", min=1)


def export_program(program: TorchProgram, path: Path) -> Path:
    """Writes the model as a `torch.export` program (`.pt2`: graph and weights; the batch axis
    dynamic), which `torch.export.load(path).module()` runs with torch alone; returns `path`.

    Raises:
        CrosstrainError: torch cannot export the model (its reason, in one line).
    """
    import torch
    from crosstrain.errors import CrosstrainError

    module, example, batch = inference_module(program)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exported = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        except Exception as err:  # torch.export's many error types: its reason, in one line
            text = str(err).strip()
            reason = text.splitlines()[0] if text else type(err).__name__
            raise CrosstrainError(
                f"export --to torch-program: torch cannot export this model: {reason}"
            ) from err
    torch.export.save(exported, str(path))
    return path
