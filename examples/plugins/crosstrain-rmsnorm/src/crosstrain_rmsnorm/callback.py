"""`ScaleLogger`: after each training epoch, the mean `scale` of every RMSNorm, as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crosstrain import Callback


class ScaleLogger(Callback):
    """Appends `{"epoch": e, "<layer>/scale": mean, ...}` to a file after each training epoch.

    Args:
        path: the JSON-lines file (its directory must exist).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []

    def on_epoch_end(self, trainer: Any, stage: str, epoch: int) -> None:
        if stage != "train":
            return
        params = trainer.program.get_state().params
        row: dict[str, Any] = {"epoch": epoch}
        row.update({name: float(value.mean()) for name, value in params.items() if _is_scale(name)})
        self.rows.append(row)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def _is_scale(name: str) -> bool:
    *layer, param = name.split("/")
    return param == "scale" and bool(layer) and layer[-1].startswith("rmsnorm")
