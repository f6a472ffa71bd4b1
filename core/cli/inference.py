"""`crosstrain evaluate` and `crosstrain predict`: a checkpoint's metrics on data, or its
outputs for inputs (saved as .npy). Both take `--set` and `--run-dir` as `fit` does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from crosstrain import api
from crosstrain.cli.fit import parse_sets, print_metrics, read_spec
from crosstrain.output import LOG
from crosstrain.plugin.command import Command
from crosstrain.spec.schema import Spec

SPLIT_TITLES = {"test": "test", "val": "validation", "train": "training"}


def inference_spec(args: argparse.Namespace) -> Spec:
    """The spec of `evaluate`/`predict`/`compare`: the file with `--set` and `--run-dir` applied
    (`--run-dir` is where `--checkpoint latest` looks: `<run dir>/<name>/*/checkpoints`)."""
    spec = read_spec(args.spec)
    changes: dict[str, Any] = parse_sets(args.set or [])
    if args.run_dir is not None:
        changes["trainer.run_dir"] = json.dumps(args.run_dir)
    return spec.override(changes) if changes else spec


def cmd_evaluate(args: argparse.Namespace) -> int:
    done = api.evaluate_checkpoint(inference_spec(args), args.checkpoint, backend=args.backend)
    LOG.info(f"checkpoint: {done.checkpoint} (step {done.step})")
    LOG.info(f"data: {done.described}")
    print_metrics(f"{SPLIT_TITLES[done.split]} metrics:", done.metrics)
    return 0


def read_inputs(path: str) -> Any:
    """The inputs of `crosstrain predict --input`: a `.npy` array, or the `x` array of an `.npz`
    (its only array when it has one)."""
    import numpy as np

    if not Path(path).is_file():
        raise FileNotFoundError(f"--input {path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"--input {path}: not a .npy or .npz file ({err})") from err
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if "x" in names or len(names) == 1:
            return loaded["x" if "x" in names else names[0]]
    raise ValueError(f"--input {path}: an .npz with arrays {names} and no 'x'; name it x")


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    inputs = None if args.input is None else read_inputs(args.input)
    spec = inference_spec(args)
    checkpoint = api.find_checkpoint(spec, args.checkpoint)
    outputs = api.predict(spec, checkpoint, inputs, backend=args.backend)
    LOG.info(f"checkpoint: {checkpoint}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, outputs)
    print(f"predictions: shape {tuple(outputs.shape)}, {outputs.dtype} -> {output}")
    return 0


def backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        metavar="NAME",
        help="torch, jax, keras[:engine] or a plugin's (default: $CROSSTRAIN_BACKEND, the spec's, torch)",
    )


def inference_options(parser: argparse.ArgumentParser) -> None:
    """`--set` (as `fit` takes it: several per flag, repeatable) and `--run-dir`."""
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        help="override spec fields, e.g. --set data.validation_split=0.3 data.batch_size=256 "
        "(repeatable; values are YAML; put the spec file before --set)",
    )
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help="root of the run directories, where latest looks (sets trainer.run_dir; default runs)",
    )


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec file (YAML or JSON)")
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="a step-N checkpoint, a run directory, or latest",
    )
    backend_option(parser)
    inference_options(parser)


def configure_predict(parser: argparse.ArgumentParser) -> None:
    """The arguments of `predict`: those of `evaluate`, `--input` and `--output`."""
    _configure(parser)
    parser.add_argument(
        "--input",
        metavar="FILE",
        help="inputs as .npy, or .npz with an x array (default: every input of the spec's data)",
    )
    parser.add_argument(
        "--output",
        default="predictions.npy",
        metavar="FILE",
        help="where to write the outputs (default predictions.npy)",
    )


COMMANDS = (
    Command("evaluate", "test loss and metrics of a checkpoint", _configure, cmd_evaluate),
    Command(
        "predict", "model outputs of a checkpoint, saved as .npy", configure_predict, cmd_predict
    ),
)
