"""Native exports of the torch backend: the module's `state_dict` as safetensors.

`FORMATS` is declared data (no torch import); `export` imports torch when it writes.
"""

from __future__ import annotations

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
)


def export(program: TorchProgram, path: Path, format: str) -> Path:
    """Writes `program`'s module in `format` (only `torch`) to `path`; returns `path`.

    Raises:
        UnsupportedFeature: `format` is not one of `FORMATS`.
    """
    if format != "torch":
        raise UnsupportedFeature(program.backend, f"export to {format!r}", ["torch"])
    from safetensors.torch import save_file

    tensors = program.native_model.state_dict()
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path))
    return path
