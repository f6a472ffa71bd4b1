"""TensorBoard event files (`trainer.loggers: [tensorboard]`), written without any framework.

Events go to `<run_dir>/tensorboard/` (so `tensorboard --logdir runs` lists every run). They
are written with tensorboard's own protos and record framing (`RecordWriter` over a plain
file), not `torch.utils.tensorboard` or `tf.summary`, and not tensorboard's
`EventFileWriter` either: that one opens files through `tensorboard.compat.tf`, which imports
TensorFlow (seconds) whenever it is installed.

What is written:
- scalars (`simple_value`, the classic form every reader understands) at each metric pull
  and each epoch end, `step = global_step`, keys as `logger_base` describes;
- the flattened spec as an HParams session (the HParams dashboard) and as text `spec`;
- the model summary as text `model_summary`, and the final checkpoint path as text
  `checkpoint` (with the run's end status) when the fit ends.

Requires the `tensorboard` package (`pip install 'crosstrain[tensorboard]'`).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from crosstrain.plugin.hookspecs import hookimpl
from crosstrain.spec.summary import model_summary_text

from .logger_base import TrackerLogger, flatten_spec, require


def _as_code(text: str) -> str:
    """Text shown verbatim by TensorBoard's markdown text dashboard (an indented code block)."""
    return "\n".join("    " + line for line in text.splitlines())


class TensorBoardLogger(TrackerLogger):
    """One `events.out.tfevents.*` file per fit in `<run_dir>/tensorboard/`."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, spec: Any, options: dict[str, Any] | None = None):
        super().__init__(run_dir, spec, options)
        require("tensorboard", self.name, "tensorboard")
        self.log_dir = self.run_dir / "tensorboard"
        self._writer: Any = None

    def _emit(self, summary: Any, step: int) -> None:
        from tensorboard.compat.proto import event_pb2

        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        self._writer.write(event.SerializeToString())

    def _text(self, tag: str, text: str, step: int) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        self._emit(text_pb(tag, text), step)

    def start(self, trainer: Any) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb
        from tensorboard.summary.writer.record_writer import RecordWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = (
            f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}.crosstrain"
        )
        self._writer = RecordWriter((self.log_dir / name).open("wb"))
        self._writer.write(
            event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()
        )
        step = trainer.global_step
        self._emit(hparams_pb(flatten_spec(self.spec), trial_id=self.run_dir.name), step)
        self._text("spec", _as_code(self.spec.to_yaml()), step)
        table = model_summary_text(self.spec)
        if table is not None:
            self._text("model_summary", _as_code(table), step)
        self._writer.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from tensorboard.compat.proto import summary_pb2

        values = [
            summary_pb2.Summary.Value(tag=key, simple_value=float(value))
            for key, value in metrics.items()
        ]
        self._emit(summary_pb2.Summary(value=values), step)
        self._writer.flush()

    def finish(self, last_checkpoint: Path | None, status: str, step: int) -> None:
        text = str(last_checkpoint) if last_checkpoint is not None else "(no checkpoint written)"
        self._text("checkpoint", f"{text} ({status})", step)
        self._writer.close()


@hookimpl
def crosstrain_add_loggers(registry: Any) -> None:
    registry.loggers.add("tensorboard", TensorBoardLogger)
