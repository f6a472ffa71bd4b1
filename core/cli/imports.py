"""`crosstrain import hf DIR [--output spec.yaml]`: a transformers GPT-2 or Llama directory as
a crosstrain spec plus its weights in crosstrain's canonical names (crosstrain.checkpoint.pretrained).

With `--output spec.yaml` the converted weights go beside it as `spec.safetensors`; without,
the spec is printed and the weights go into DIR as `crosstrain.safetensors`. The spec's
`model.weights` names the file by its absolute path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crosstrain.output import LOG
from crosstrain.plugin.command import Command


def cmd_import(args: argparse.Namespace) -> int:
    from crosstrain.checkpoint.pretrained import from_pretrained

    output = Path(args.output) if args.output else None
    weights = output.with_suffix(".safetensors") if output is not None else None
    spec = from_pretrained(
        args.directory, weights, sequence_length=args.sequence_length, name=args.name
    )
    if output is None:
        print(spec.to_yaml(), end="")
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(spec.to_yaml())
    LOG.info("wrote %s (weights: %s)", output, spec.model.weights)
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["hf"], help="hf: a Hugging Face transformers directory")
    parser.add_argument("directory", help="config.json + model.safetensors (save_pretrained)")
    parser.add_argument(
        "--output", "-o", help="spec file to write (weights beside it as <stem>.safetensors)"
    )
    parser.add_argument(
        "--sequence-length",
        type=int,
        default=None,
        help="model.input_shape (default the config's n_positions / max_position_embeddings)",
    )
    parser.add_argument("--name", default=None, help="the spec's name (default the directory's)")


COMMANDS = (
    Command(
        "import",
        "a Hugging Face GPT-2 or Llama directory as a spec with its weights",
        _configure,
        cmd_import,
    ),
)
