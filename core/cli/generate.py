"""`crosstrain generate`: text from a language model's checkpoint (`crosstrain.generate`)."""

from __future__ import annotations

import argparse

from crosstrain import api
from crosstrain.cli.inference import backend_option, inference_options, inference_spec
from crosstrain.output import LOG
from crosstrain.plugin.command import Command

DESCRIPTION = (
    "Prints the prompt followed by --max-new-tokens sampled tokens. Decoding recomputes the "
    "whole window (the last block_size tokens) for each new token: there is no key-value "
    "cache. --temperature 0 is greedy and gives the same text on every backend; sampling is "
    "seeded (--seed). The model must be causal; the tokenizer is the one saved with the run."
)


def cmd_generate(args: argparse.Namespace) -> int:
    args.spec, chosen = api.run_target(args.spec, args.checkpoint)
    spec = inference_spec(args)
    checkpoint = api.find_checkpoint(spec, chosen)
    LOG.info(f"checkpoint: {checkpoint}")
    text = api.generate(
        spec,
        checkpoint,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        backend=args.backend,
    )
    print(text)
    return 0


def configure_generate(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("spec", help="spec file (YAML or JSON), or a run directory")
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="a step-N checkpoint, a run directory, or latest (default: the run directory "
        "given as SPEC, else latest)",
    )
    parser.add_argument("--prompt", default="\n", help="text to continue (default a newline)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=200, metavar="N", help="tokens to add (default 200)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        metavar="T",
        help="0: greedy (argmax); above 1 flatter, below 1 sharper (default 1.0)",
    )
    parser.add_argument(
        "--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    backend_option(parser)
    inference_options(parser)


COMMANDS = (
    Command(
        "generate",
        "text from a language model's checkpoint (no key-value cache: recomputes the window)",
        configure_generate,
        cmd_generate,
    ),
)
