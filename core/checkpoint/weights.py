"""Given weights: `model.weights` (and `model.init_from`) loaded before step 1, by canonical name.

A file is one of:

- a safetensors file (`.safetensors`; a torch `state_dict` saved with
  `safetensors.torch.save_file`, or crosstrain's own `model.safetensors`);
- a crosstrain checkpoint directory (`step-<N>/`, or a run or checkpoints directory: its
  latest checkpoint), whose parameters are read (optimizer slots and the step are not);
- a numpy `.npz` (read with `allow_pickle=False`);
- a Keras `.keras` file (its `model.weights.h5`, read with h5py; nothing in it is deserialised).

A pickle (`.pt`, `.pth`, `.bin`, `.ckpt`, `.pkl`, or a file that starts like one) is refused
with the line that converts it to safetensors.

`model.weights_map: {their_name: our_name}` renames first: each key is a regular expression
that must match a whole name (a plain name matches itself), the first matching entry wins, its
value may use `\\1` groups, and a value of null drops the tensor. Then the names are read in
the file's layout (`model.weights_layout`, default auto):

- `crosstrain`: canonical names and layouts (`dense_3/kernel`, kernel `(in, out)`, HWIO).
- `torch`: a torch `state_dict`: `<module path>.<weight|bias|running_mean|running_var>`,
  the module path naming a crosstrain layer by its canonical name (give layers torch's
  names with `name:`) or by position (`0.weight` is the first layer, `block.1.weight` the
  second layer inside `block`); `.` and `/` separate the path. Linear weights `(out, in)` are
  transposed, convolution kernels go from OIHW / OIW to HWIO / WIO, and the first Dense
  after a Flatten of a `(H, W, C)` (or `(L, C)`) input has its input axis reordered from
  torch's channels-first flatten order to crosstrain's channels-last one. `num_batches_tracked`
  is ignored. Recurrent and attention layers are refused in this layout (use crosstrain's).
- `keras`: a `.keras` file's `<layer name>/vars/<i>`, the layer name a canonical name (Keras
  writes `/` as `__`), the i-th weight the layer's i-th parameter; shapes up to a reshape.
- `auto`: `keras` for a `.keras` file, `crosstrain` for a checkpoint; for a safetensors or
  npz file `torch` when no name contains `/` and every name ends in one of torch's parameter
  suffixes (`.weight`, `.bias`, `.running_mean` ...), else `crosstrain`.

`model.weights` must fit exactly: every parameter of the model, nothing else, each in its
shape, or one error lists every name missing, unexpected and of the wrong shape.
`model.init_from` takes the tensors that fit (same canonical name and shape) and initialises
the rest from the seed as usual, listing them at info level.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from crosstrain.errors import CheckpointError, SpecError, SpecIssue

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
TORCH_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_TORCH_NAMES = {
    "Dense": {"weight": "kernel", "bias": "bias"},
    "Conv2D": {"weight": "kernel", "bias": "bias"},
    "Conv1D": {"weight": "kernel", "bias": "bias"},
    "Embedding": {"weight": "embeddings"},
    "PositionEmbedding": {"weight": "embeddings"},
    "BatchNorm": {
        "weight": "gamma",
        "bias": "beta",
        "running_mean": "moving_mean",
        "running_var": "moving_variance",
    },
    "LayerNorm": {"weight": "gamma", "bias": "beta"},
    "RMSNorm": {"weight": "scale"},
}
"""torch attribute → canonical parameter, per layer type (the types torch layout supports)."""
_SHOWN = 20


def _issue(field: str, message: str) -> SpecError:
    return SpecError(SpecIssue(field, message))


# -- reading a file ------------------------------------------------------------------------------


def _pickle_refusal(path: Path, field: str) -> SpecError:
    return _issue(
        field,
        f"{path} is a pickle (torch.save); crosstrain never unpickles: convert it once with "
        f'`python -c "import torch; from safetensors.torch import save_file; '
        f"save_file(torch.load('{path}', weights_only=True), '{path.with_suffix('.safetensors')}')\"`"
        " and point to the .safetensors file",
    )


def _checkpoint_dir(path: Path) -> Path | None:
    """A checkpoint directory `path` is or holds (its latest one), or None."""
    from crosstrain.checkpoint.format import latest_checkpoint

    if (path / "trainer.json").is_file():
        return path
    for candidate in (path, path / "checkpoints"):
        found = latest_checkpoint(candidate)
        if found is not None:
            return found
    return None


def _snake_case(name: str) -> str:
    """Keras's `naming.to_snake_case` (what its weights file names a layer after)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _keras_layer_names(config: Any) -> dict[str, str]:
    """The weights file's path of each top-level layer (its class in snake case, numbered from
    the second on, as Keras saves) → the layer's own name in `config.json`."""
    layers = config.get("config", {}).get("layers", []) if isinstance(config, dict) else []
    used: dict[str, int] = {}
    out: dict[str, str] = {}
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("class_name") == "InputLayer":
            continue
        snake = _snake_case(str(layer.get("class_name", "")))
        key = f"{snake}_{used[snake]}" if snake in used else snake
        used[snake] = used.get(snake, 0) + 1
        name = layer.get("config", {}).get("name")
        if isinstance(name, str):
            out[key] = name
    return out


def _read_keras(path: Path) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise _issue("model.weights", f"{path}: reading a .keras file needs h5py") from None
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read("model.weights.h5")
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise _issue("model.weights", f"{path}: not a Keras 3 .keras file ({err})") from None
    names = _keras_layer_names(config)
    tensors: dict[str, np.ndarray] = {}
    with h5py.File(io.BytesIO(data), "r") as h5:
        if "layers" not in h5:
            raise _issue("model.weights", f"{path}: its model.weights.h5 has no layers")

        def visit(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset):
                parts = [p for p in name.split("/") if p != "layers"]
                parts[0] = names.get(parts[0], parts[0])
                tensors["/".join(parts)] = np.asarray(item[()])

        h5["layers"].visititems(visit)
    return tensors


def read_weights(path: str | Path, field: str = "model.weights") -> tuple[dict[str, Any], str]:
    """The tensors of a weights file by their names in it, and its kind: `safetensors`,
    `checkpoint`, `npz` or `keras`. Raises SpecError at `field` naming the file and problem."""
    from crosstrain.checkpoint.checks import check_tensor_file
    from crosstrain.checkpoint.format import read_checkpoint
    from crosstrain.checkpoint.stream import read_tensor_file

    path = Path(path).expanduser()
    if not path.exists():
        raise _issue(field, f"{path}: no such file or directory")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise _pickle_refusal(path, field)
    try:
        if path.is_dir():
            found = _checkpoint_dir(path)
            if found is None:
                raise _issue(field, f"{path}: a directory without a crosstrain checkpoint")
            state, _ = read_checkpoint(found)
            return dict(state.params), "checkpoint"
        with path.open("rb") as handle:
            head = handle.read(4)
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            raise _pickle_refusal(path, field)
        if path.suffix.lower() == ".keras":
            return _read_keras(path), "keras"
        if path.suffix.lower() == ".npz" or head == b"PK\x03\x04":
            if path.suffix.lower() != ".npz":
                raise _pickle_refusal(path, field)  # a zip that is not .npz: torch.save's
            try:
                with np.load(path, allow_pickle=False) as archive:
                    return {name: archive[name] for name in archive.files}, "npz"
            except (ValueError, OSError, zipfile.BadZipFile) as err:
                raise _issue(field, f"{path}: not a readable .npz ({err})") from None
        check_tensor_file(path, bfloat16=True)
        return read_tensor_file(path, None, bfloat16=True), "safetensors"
    except CheckpointError as err:
        raise _issue(field, str(err)) from None
    except OSError as err:
        raise _issue(field, f"{path}: unreadable ({err.strerror or err})") from None


# -- names and layouts ---------------------------------------------------------------------------


def rename(tensors: dict[str, Any], mapping: dict[str, str | None] | None) -> dict[str, Any]:
    """`model.weights_map` applied: the first entry whose pattern matches a whole name renames
    it (`\\1` groups allowed); a null target drops the tensor."""
    if not mapping:
        return dict(tensors)
    compiled = [(re.compile(pattern), target) for pattern, target in mapping.items()]
    out: dict[str, Any] = {}
    for name, value in tensors.items():
        for pattern, target in compiled:
            match = pattern.fullmatch(name)
            if match:
                name = None if target is None else match.expand(target)
                break
        if name is not None:
            out[name] = value
    return out


def detect_layout(names: list[str], kind: str) -> str:
    """`auto` resolved for a file's (renamed) tensor names and kind."""
    if kind == "keras":
        return "keras"
    if kind == "checkpoint" or not names:
        return "crosstrain"
    torch_like = all("/" not in n and n.rpartition(".")[2] in TORCH_SUFFIXES for n in names)
    return "torch" if torch_like else "crosstrain"


def _resolve_node(nodes: list[Any], path: list[str]) -> Any:
    """The LayerNode a torch/keras module path names: each step a canonical child name (the last
    part of it) or a position among the children; None when nothing matches."""
    node = None
    for step in path:
        by_name = {n.name.rsplit("/", 1)[-1]: n for n in nodes}
        if step in by_name:
            node = by_name[step]
        elif step.isdigit() and int(step) < len(nodes):
            node = nodes[int(step)]
        else:
            return None
        nodes = node.children
    return node


def _by_path(nodes: list[Any], prefix: str) -> Any:
    from crosstrain.nn.model import walk

    wanted = prefix.replace(".", "/")
    for node in walk(nodes):
        if node.name == wanted:
            return node
    return _resolve_node(nodes, [p for p in re.split(r"[./]", prefix) if p])


_ELEMENTWISE = ("Dropout", "ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Softmax", "Activation")


def _after_flatten(nodes: list[Any]) -> dict[str, tuple[int, ...]]:
    """Dense layers fed by a Flatten of a rank-2+ input (through element-wise layers only), by
    canonical name → the Flatten's input shape (channels last)."""
    found: dict[str, tuple[int, ...]] = {}

    def chain(items: list[Any]) -> None:
        flat: tuple[int, ...] | None = None
        for node in items:
            kind = node.layer.type
            if kind == "Flatten":
                flat = tuple(node.input_shape) if len(node.input_shape) >= 2 else None
            elif kind == "Dense" and flat is not None:
                found[node.name] = flat
                flat = None
            elif kind not in _ELEMENTWISE:
                flat = None
            chain(node.children)

    chain(nodes)
    return found


def _from_torch(
    tensors: dict[str, Any], nodes: list[Any]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Canonical names and layouts of a torch state_dict; and the file names that name no
    layer (reported as unexpected)."""
    flattened = _after_flatten(nodes)
    out: dict[str, np.ndarray] = {}
    unplaced: list[str] = []
    for name, value in tensors.items():
        prefix, _, attr = name.rpartition(".") if "." in name else name.rpartition("/")
        if attr == "num_batches_tracked":
            continue
        node = _by_path(nodes, prefix) if prefix else None
        table = _TORCH_NAMES.get(node.layer.type) if node is not None else None
        if node is not None and table is None:
            raise _issue(
                "model.weights_layout",
                f"torch layout does not cover {node.layer.type} ({node.name}, from {name}); "
                "save that layer in crosstrain's layout (canonical names) instead",
            )
        if table is None or attr not in table:
            unplaced.append(name)
            continue
        array = np.asarray(value)
        kind = node.layer.type
        if table[attr] == "kernel" and kind == "Conv2D" and array.ndim == 4:
            array = array.transpose(2, 3, 1, 0)
        elif table[attr] == "kernel" and kind == "Conv1D" and array.ndim == 3:
            array = array.transpose(2, 1, 0)
        elif table[attr] == "kernel" and kind == "Dense" and array.ndim == 2:
            shape = flattened.get(node.name)
            if shape is not None and array.shape[1] == int(np.prod(shape)):
                # torch flattened (C, *spatial); crosstrain flattens (*spatial, C)
                channels_first = array.reshape(array.shape[0], shape[-1], *shape[:-1])
                order = (0, *range(2, len(shape) + 1), 1)
                array = channels_first.transpose(order).reshape(array.shape[0], -1)
            array = array.T
        out[f"{node.name}/{table[attr]}"] = np.ascontiguousarray(array)
    return out, unplaced


def _from_keras(
    tensors: dict[str, Any], nodes: list[Any]
) -> tuple[dict[str, np.ndarray], list[str]]:
    out: dict[str, np.ndarray] = {}
    unplaced: list[str] = []
    for name, value in tensors.items():
        layer_path, _, index = name.rpartition("/vars/")
        node = _by_path(nodes, layer_path.replace("__", "/")) if index.isdigit() else None
        specs = list(node.layer.params(node.input_shape).items()) if node is not None else []
        if node is None or int(index) >= len(specs):
            unplaced.append(name)
            continue
        pname, spec = specs[int(index)]
        array = np.asarray(value)
        if array.size == int(np.prod(spec.shape)) and array.shape != tuple(spec.shape):
            array = array.reshape(spec.shape)  # MultiHeadAttention's (features, heads, dim)
        out[f"{node.name}/{pname}"] = array
    return out, unplaced


def canonical_tensors(
    tensors: dict[str, Any], model: Any, layout: str, kind: str
) -> tuple[dict[str, np.ndarray], list[str], str]:
    """The file's tensors under canonical names and layouts, the names that name no parameter
    (in the file's terms), and the layout used."""
    from crosstrain.nn.model import plan

    if layout == "auto":
        layout = detect_layout(list(tensors), kind)
    nodes = plan(model)
    if layout == "torch":
        out, unplaced = _from_torch(tensors, nodes)
    elif layout == "keras":
        out, unplaced = _from_keras(tensors, nodes)
    else:
        out, unplaced = {n: np.asarray(v) for n, v in tensors.items()}, []
    return out, unplaced, layout


def _listed(names: list[str]) -> str:
    shown = names[:_SHOWN]
    more = f", ... {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(shown) + more


def _as_float32(name: str, array: np.ndarray, field: str) -> np.ndarray:
    if array.dtype.kind not in "fiu":
        raise _issue(field, f"tensor {name} has dtype {array.dtype}, not a number")
    return np.asarray(array, np.float32)


def load_given(model: Any) -> dict[str, np.ndarray]:
    """The parameters `model.weights` or `model.init_from` gives, canonical name → float32
    (empty when neither is set). `weights` must fit exactly; `init_from` gives what fits."""
    from crosstrain.nn.model import param_specs
    from crosstrain.output import LOG

    path, field = model.weights, "model.weights"
    if path is None and model.init_from is not None:
        path, field = model.init_from, "model.init_from"
    if path is None:
        return {}
    raw, kind = read_weights(path, field)
    renamed = rename(raw, model.weights_map)
    given, unplaced, layout = canonical_tensors(
        renamed, model, model.weights_layout or "auto", kind
    )
    expected = {name: tuple(spec.shape) for name, spec in param_specs(model).items()}
    missing = [n for n in expected if n not in given]
    unexpected = unplaced + [n for n in given if n not in expected]
    wrong = [
        f"{n} (file {tuple(given[n].shape)}, model {expected[n]})"
        for n in expected
        if n in given and tuple(given[n].shape) != expected[n]
    ]
    if field == "model.weights" and (missing or unexpected or wrong):
        parts = [
            f"{label} ({len(names)}): {_listed(names)}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong),
            )
            if names
        ]
        hint = "" if layout == "crosstrain" else f" read in {layout} layout"
        raise _issue(
            field,
            f"{path}{hint} does not fit this model: "
            + "; ".join(parts)
            + " (rename with model.weights_map, or pick model.weights_layout)",
        )
    fitting = {
        n: _as_float32(n, given[n], field)
        for n in expected
        if n in given and tuple(given[n].shape) == expected[n]
    }
    if field == "model.init_from":
        left = [n for n in expected if n not in fitting]
        LOG.info(
            "init_from %s: %d of %d parameters loaded; initialised from the seed: %s",
            path,
            len(fitting),
            len(expected),
            _listed(left) or "none",
        )
    return fitting


def initial_params(model: Any, seed: int, core_only: bool = False) -> dict[str, np.ndarray]:
    """What core gives a backend to start from: the seeded initial values with the given weights
    in place (`model.weights` / `model.init_from`). With `core_only` (`model.init: native`),
    only the given weights and the parameters whose initialiser the backend cannot draw."""
    from crosstrain.nn.model import core_drawn, init_params, param_specs

    given = load_given(model)
    wanted = set(core_drawn(model)) if core_only else set(param_specs(model))
    names = wanted - set(given)
    merged = {**(init_params(model, seed, names) if names else {}), **given}
    return {n: merged[n] for n in param_specs(model) if n in merged}


def without_given(spec: Any) -> Any:
    """`spec` with `model.weights` and `model.init_from` cleared: what builds the program that a
    checkpoint is then loaded into (resume, evaluate, predict), so the file is not read again."""
    model = getattr(spec, "model", None)
    if model is None or (model.weights is None and model.init_from is None):
        return spec
    cleared = model.model_copy(update={"weights": None, "init_from": None})
    return spec.model_copy(update={"model": cleared})
