"""The `crosstrain` command: fit, evaluate, predict, summary, backends, plugins, schema.

Every subcommand calls the Python API (`crosstrain.api`). Deliberate errors (a bad spec, a
missing framework, a broken checkpoint ...) print as `error: ...` on stderr without a
traceback and exit 2 (1 when training itself failed, 130 on Ctrl-C, 143 on SIGTERM); `--traceback` shows the
full traceback instead.

Example:
    $ crosstrain fit examples/digits_mlp.yaml --backend torch --set trainer.max_epochs=3
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import api
from .cli_fit import (  # noqa: F401 (fit_overrides, parse_sets: public here too)
    cmd_config,
    cmd_fit,
    configure_fit,
    fit_overrides,
    parse_sets,
    print_metrics,
    read_spec,
)
from .cli_registry import cmd_backends, cmd_plugins
from .errors import WORKER_ERROR_DIR_ENV, CrosstrainError, Terminated, TrainingError
from .output import LOG, configure_output
from .registry import Registry, build_registry, get_registry, set_registry
from .spec import Spec
from .summary import summary

EXIT_ERROR = 2
EXIT_TRAINING_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


# -- spec handling ------------------------------------------------------------------------------


def spec_json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of a spec, with every registered layer type spelled out for editors.

    Python callables (`fn` of a loss given in code) have no JSON form and are left out.
    """
    from pydantic.json_schema import GenerateJsonSchema, models_json_schema
    from pydantic_core import PydanticOmit

    class Generator(GenerateJsonSchema):
        def callable_schema(self, schema: Any) -> Any:
            raise PydanticOmit

        def get_default_value(self, schema: Any) -> Any:
            # defaults made by a factory (`loggers: [csv]`, the Adam optimizer) are shown too
            factory = schema.get("default_factory")
            if factory is not None and not schema.get("default_factory_takes_data"):
                return factory()
            return super().get_default_value(schema)

    schema = Spec.model_json_schema(schema_generator=Generator)
    registry = registry or get_registry()
    layer_classes = [registry.layers.get(name) for name in registry.layers.names()]
    if not layer_classes:
        return schema
    _, layers = models_json_schema(
        [(cls, "validation") for cls in layer_classes],
        schema_generator=Generator,
        ref_template="#/$defs/{model}",
    )
    definitions = schema.setdefault("$defs", {})
    for name, definition in layers.get("$defs", {}).items():
        definitions.setdefault(name, definition)
    definitions["AnyLayer"] = {
        "description": "one layer: its `type` picks the layer and its options",
        "oneOf": [{"$ref": f"#/$defs/{cls.__name__}"} for cls in layer_classes],
    }
    for definition in definitions.values():
        field = definition.get("properties", {}).get("layers")
        if isinstance(field, dict) and field.get("items") == {}:
            field["items"] = {"$ref": "#/$defs/AnyLayer"}
    return schema


# -- subcommands --------------------------------------------------------------------------------


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


def cmd_summary(args: argparse.Namespace) -> int:  # the table is the result: printed even with -q
    print(summary(read_spec(args.spec)))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.markdown:
        from .spec_reference import render_spec_reference

        print(render_spec_reference(spec_json_schema()), end="")
        return 0
    print(json.dumps(spec_json_schema(), indent=2))
    return 0


# -- parser -------------------------------------------------------------------------------------


def _backend_option(parser: argparse.ArgumentParser) -> None:
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


EXTRA_COMMANDS: tuple[str, ...] = (
    "crosstrain.cli_export",
    "crosstrain.cli_conformance",
    "crosstrain.cli_compare",
)
"""Modules that each add one subcommand: `NAME`, `HELP`, `configure(parser)`, `run(args) -> int`.

They must import no framework at module level (`crosstrain --help` imports them all).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `crosstrain` command."""
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=-1,
        default=0,
        help="only results, warnings and errors (no model table, progress or file notes)",
    )
    loudness.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=1,
        help="debug lines too, and the frameworks' own log lines (TensorFlow/XLA C++ logs)",
    )
    common.add_argument(
        "--plugins",
        metavar="A,B",
        help="load only these plugins (names as `crosstrain plugins` lists them)",
    )
    common.add_argument(
        "--no-plugin",
        action="append",
        metavar="NAME",
        help="never import this plugin (repeatable; built-ins included)",
    )
    parser = argparse.ArgumentParser(
        prog="crosstrain", description="One training spec, every framework."
    )
    parser.add_argument("--version", action="version", version=f"crosstrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=text, description=text)
        command.set_defaults(handler=handler)
        return command

    configure_fit(add("fit", cmd_fit, "train a spec (--print-config: show it resolved)"))
    configure_fit(
        add("config", cmd_config, "print the fully resolved spec, as fit would run it"),
        training=False,
    )

    evaluate = add("evaluate", cmd_evaluate, "test loss and metrics of a checkpoint")
    predict = add("predict", cmd_predict, "model outputs of a checkpoint, saved as .npy")
    for command in (evaluate, predict):
        command.add_argument("spec", help="spec file (YAML or JSON)")
        command.add_argument(
            "--checkpoint",
            required=True,
            metavar="PATH",
            help="a step-N checkpoint, a run directory, or latest",
        )
        _backend_option(command)
        inference_options(command)
    predict.add_argument(
        "--input",
        metavar="FILE",
        help="inputs as .npy, or .npz with an x array (default: every input of the spec's data)",
    )
    predict.add_argument(
        "--output",
        default="predictions.npy",
        metavar="FILE",
        help="where to write the outputs (default predictions.npy)",
    )

    add("summary", cmd_summary, "the model of a spec as a table of layers").add_argument(
        "spec", help="spec file (YAML or JSON)"
    )
    add("backends", cmd_backends, "registered backends: installed, version, accelerators")
    add("plugins", cmd_plugins, "loaded plugins, what each registered, and broken ones")
    add("schema", cmd_schema, "the JSON Schema of a spec, for editors").add_argument(
        "--markdown",
        action="store_true",
        help="the spec reference as Markdown tables instead (docs/spec-reference.md)",
    )
    for module_name in EXTRA_COMMANDS:
        module = importlib.import_module(module_name)
        command = add(module.NAME, module.run, module.HELP)
        module.configure(command)
    return parser


def _use_plugins(names: str | None, blocked: list[str] | None = None) -> None:
    only = [n.strip() for n in names.split(",") if n.strip()] if names else None
    registry = build_registry(only=only, blocked=blocked)
    set_registry(registry)
    known = [name for name, _ in registry.loaded] + [b.name for b in registry.broken]
    for wanted in only or []:
        if not any(wanted in (name, name.rsplit(".", 1)[-1]) for name in known):
            print(f"warning: --plugins: no plugin named {wanted!r} was found", file=sys.stderr)


def _report(err: BaseException) -> None:
    message = str(err).strip() or type(err).__name__
    errors_dir = os.environ.get(WORKER_ERROR_DIR_ENV)
    if errors_dir and "RANK" in os.environ:  # a worker: the launcher prints it once for all ranks
        path = Path(errors_dir) / f"rank-{os.environ['RANK']}.txt"
        try:
            path.write_text(message + "\n", encoding="utf-8")
            return
        except OSError:
            pass
    print(f"error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Args:
        argv: the arguments after the program name (default `sys.argv[1:]`).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    args.argv = list(sys.argv[1:] if argv is None else argv)
    configure_output(args.verbosity)
    try:
        if args.plugins or args.no_plugin:
            _use_plugins(args.plugins, args.no_plugin)
        return args.handler(args)
    except KeyboardInterrupt as err:
        if args.traceback:
            raise
        terminated = isinstance(err, Terminated)
        print("\nterminated" if terminated else "\ninterrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except (CrosstrainError, FileNotFoundError, ValueError) as err:
        if args.traceback:
            raise
        _report(err)
        return EXIT_TRAINING_FAILED if isinstance(err, TrainingError) else EXIT_ERROR
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def end_worker(status: int) -> None:
    """Ends a command-line process that was one rank of a multi-process run.

    The atexit handlers run while the interpreter is whole (the torch backend leaves its process
    group there, after a barrier), the output is flushed, and the process ends without
    interpreter finalization: collective libraries' C++ threads racing the teardown of Python
    objects there can abort a finished rank (gloo on PyTorch), failing a run whose checkpoints
    are already written. Only the command line does this; a user's own script exits normally.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run() -> None:
    """The `crosstrain` command (console script and `python -m crosstrain.cli`)."""
    status = main()
    if os.environ.get(api.DISTRIBUTED_WORKER_ENV):
        end_worker(status)
    raise SystemExit(status)


if __name__ == "__main__":
    run()
