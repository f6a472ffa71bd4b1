"""Streaming data: loaders, data sets and iterables of batches that the trainer reads once per epoch.

`fit(data=...)` takes numpy arrays (core draws seeded index slices) or anything that yields
batches: a torch `DataLoader` or `Dataset`, a `tf.data.Dataset`, a grain `DataLoader` /
`MapDataset` / `IterDataset`, or any re-iterable whose items are `(x, y)` tuples or dicts with
one of the key pairs in `BATCH_KEYS`. Libraries are recognised by data adapters (a plugin hook,
`crosstrain_add_data_adapters`) without importing them; each adapter also converts its
library's tensors into what the backend's Program takes (`Program.array_kind`), zero-copy where
the frameworks allow (DLPack from torch to jax, `Tensor.numpy()` from TensorFlow on the CPU).

With a stream the loader owns the order (core's seeded shuffle is for arrays only), except for a
torch map-style `Dataset`, which core batches in its own seeded order like arrays.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from crosstrain.data.inputs import check_input_ids, check_input_shape, first_layer, takes_ids
from crosstrain.data.targets import check_targets, target_checker
from crosstrain.errors import DataError

if TYPE_CHECKING:
    from crosstrain.spec.schema import Spec

BATCH_KEYS: tuple[tuple[str, str], ...] = (
    ("x", "y"),
    ("inputs", "targets"),
    ("input", "target"),
    ("features", "labels"),
    ("features", "label"),
    ("image", "label"),
)
"""Key pairs (inputs, targets) looked up in dict batches, first match wins; `Batches` takes others."""

ARRAY_KINDS = ("torch", "jax", "numpy")
"""What a Program's `array_kind` may say; a Program without the attribute takes numpy."""


class DataAdapter:
    """What a data-adapter plugin registers. Every method has a do-nothing default.

    `wraps` and `handles` are called on every fit and every new array type, so they must be
    cheap and must not import the library: compare class modules (`type(obj).__mro__`).
    """

    def wraps(self, data: Any) -> bool:
        """Whether `data` (given as `fit(data=...)`) is this library's loader or data set."""
        return False

    def batches(self, data: Any, spec: Spec) -> Any:
        """A re-iterable of batches for `data` (a loader as is; a data set batched by
        `spec.data.batch_size`). Raise DataError for data that cannot be used with `spec`."""
        return data

    def length(self, batches: Any) -> int | None:
        """Batches per pass over `batches`, or None when the library cannot tell."""
        return _length(batches)

    def handles(self, array: Any) -> bool:
        """Whether `array` (an `x` or `y` of a batch) is this library's tensor type."""
        return False

    def convert(self, array: Any, kind: str) -> Any:
        """`array` as a Program of `array_kind` `kind` (`torch`, `jax`, `numpy`) takes it."""
        return np.asarray(array)


def _type_modules(obj: Any) -> Iterator[str]:
    return (cls.__module__ or "" for cls in type(obj).__mro__)


def from_library(obj: Any, *prefixes: str) -> bool:
    """Whether `obj`'s class (or a base class) is defined in a module under one of `prefixes`."""
    return any(module.startswith(prefixes) for module in _type_modules(obj))


class Batches:
    """A re-iterable of batches that the trainer reads once per epoch.

    Wrap data in it yourself to name the dict keys of its batches (`x_key`, `y_key`) or to say
    how many batches a pass has when the loader has no `len()` (`steps_per_epoch`); `fit` wraps
    any other non-array data itself.
    """

    def __init__(
        self,
        source: Any,
        x_key: str | None = None,
        y_key: str | None = None,
        steps_per_epoch: int | None = None,
    ):
        self.source, self.x_key, self.y_key = source, x_key, y_key
        self.length = steps_per_epoch
        self.where = "data"
        self.spec: Spec | None = None
        self.one_shot = isinstance(source, Iterator)
        self._adapters: list[DataAdapter] = []
        self._converters: dict[tuple[type, str], Callable[[Any], Any]] = {}
        self._passes = 0

    def _set_epoch(self, epoch: int) -> None:
        """Tells the loader's sampler the epoch (`DistributedSampler`, core's seeded sampler)."""
        for holder in (
            self.source,
            getattr(self.source, "sampler", None),
            getattr(self.source, "batch_sampler", None),
        ):
            set_epoch = getattr(holder, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
                return

    def _split(self, batch: Any, index: int, targets: bool = True) -> tuple[Any, Any]:
        """`(x, y)` of a batch; for prediction (`targets=False`) `(x, None)`, where a dict needs
        only its input key and a bare array is the input."""
        if isinstance(batch, dict):
            pairs = [(self.x_key, self.y_key)] if self.x_key else BATCH_KEYS
            for x_key, y_key in pairs:
                if x_key in batch and (y_key in batch or not targets):
                    return batch[x_key], batch.get(y_key) if targets else None
            names = " or ".join(f"{x!r}/{y!r}" if targets else repr(x) for x, y in pairs)
            raise DataError(
                f"{self.where}: batch {index} is a dict with keys {sorted(batch)}; expected {names} "
                "(name others with crosstrain.data.batches.Batches(data, x_key=..., y_key=...))"
            )
        if isinstance(batch, (tuple, list)) and targets and len(batch) > 2:
            raise DataError(
                f"{self.where}: batch {index} is a {type(batch).__name__} of {len(batch)} items; "
                "expected (x, y): a third item such as sample weights would be dropped silently, "
                "and crosstrain does not use sample weights"
            )
        if isinstance(batch, (tuple, list)) and len(batch) >= (2 if targets else 1):
            return batch[0], batch[1] if targets else None
        if not targets:
            return batch, None
        raise DataError(
            f"{self.where}: batch {index} is a {type(batch).__name__}; expected an (x, y) tuple "
            "or a dict with 'x' and 'y'"
        )

    def _convert(self, array: Any, kind: str) -> Any:
        key = (type(array), kind)
        convert = self._converters.get(key)
        if convert is None:
            adapter = next((a for a in self._adapters if a.handles(array)), None)
            if adapter is not None:
                convert = lambda a, adapter=adapter: adapter.convert(a, kind)  # noqa: E731
            elif isinstance(array, np.ndarray):
                convert = lambda a: a  # noqa: E731
            else:
                convert = np.asarray
            self._converters[key] = convert
        return convert(array)

    def epoch(self, epoch: int, start: int, kind: str) -> Iterator[tuple[Any, Any]]:
        """The `(x, y)` batches of one pass, converted for a Program of `array_kind` `kind`,
        after skipping the first `start` (a mid-epoch resume). Learns `length` when it ends."""
        if self.one_shot and self._passes:
            raise DataError(
                f"{self.where}: the iterator was used up by the first pass; pass a re-iterable"
            )
        self._passes += 1
        self._set_epoch(epoch)
        count = 0
        check_y = target_checker(self.spec)
        first = first_layer(self.spec) if takes_ids(self.spec) else None
        for raw in self.source:
            if count >= start:
                x, y = self._split(raw, count)
                where = f"{self.where}, batch {count}"
                if getattr(x, "shape", None) is not None and len(x.shape) and x.shape[0] == 0:
                    raise DataError(f"{where} has 0 rows; a batch needs a sample or more")
                check_input_shape(x, self.spec, where)
                check_input_ids(x, self.spec, where, first)  # every batch, on the host only
                if check_y is not None:
                    check_y(y, where)
                yield self._convert(x, kind), self._convert(y, kind)
            count += 1
        if count == 0:
            raise DataError(f"{self.where}: the data yielded no batch")
        if self.length is None:
            self.length = count

    def inputs(self, kind: str) -> Iterator[Any]:
        """The inputs of one pass for prediction, converted for `kind`: a batch may be the bare
        input array, an `(x, ...)` tuple or a dict with an input key (targets are ignored)."""
        for index, raw in enumerate(self.source):
            x, _ = self._split(raw, index, targets=False)
            check_input_shape(x, self.spec, f"{self.where}, batch {index}")
            yield self._convert(x, kind)


def rows(array: Any) -> int:
    """The number of samples in a batch array (its leading axis)."""
    shape = getattr(array, "shape", None)
    return int(shape[0]) if shape is not None else len(array)


def _is_arrays(data: Any) -> bool:
    """Whole data sets as arrays (not batches): ArrayData, a dict with `x`/`y`, an `(x, y)` pair."""
    from crosstrain.data.arrays import ArrayData

    if isinstance(data, (ArrayData, np.ndarray, str, bytes)):
        return True
    if isinstance(data, dict):
        return True
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return not any(isinstance(part, (tuple, dict)) for part in data)
    return False


def _graph_arrays(data: Any, spec: Spec) -> bool:
    """`(x, y)` for a graph model whose `x` is a dict of arrays by input name or a tuple of
    arrays in input order (arrays, not two batches)."""
    model = getattr(spec, "model", None)
    if model is None or not model.is_graph or not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    x, y = data
    parts = list(x.values()) if isinstance(x, dict) else x
    return (
        isinstance(x, (dict, tuple, list))
        and all(hasattr(p, "shape") for p in parts)
        and hasattr(y, "shape")
    )


def as_batches(data: Any, where: str, spec: Spec) -> Batches | None:
    """`data` as a `Batches` stream, or None when it is arrays (handled by `as_array_data`)."""
    from crosstrain.plugin.registry import get_registry

    if not isinstance(data, Batches):
        if _is_arrays(data) or _graph_arrays(data, spec):
            return None
        adapters = get_registry().data_adapters
        adapter = next(
            (adapters.get(n) for n in adapters.names() if adapters.get(n).wraps(data)), None
        )
        if adapter is not None:
            source = adapter.batches(data, spec)
            data = Batches(source, steps_per_epoch=adapter.length(source))
        elif hasattr(data, "__iter__"):
            data = Batches(data, steps_per_epoch=_length(data))
        else:
            return None
    adapters = get_registry().data_adapters
    data._adapters = [adapters.get(n) for n in adapters.names()]
    data.where, data.spec = where, spec
    if data.length == 0:
        raise DataError(f"{where}: the data has no batch (len() is 0)")
    return data


def as_inputs(data: Any, where: str, spec: Spec) -> Batches | np.ndarray:
    """Prediction inputs: an array (or nested lists of numbers) as is; a loader, iterable or
    list of batches (arrays, tuples, dicts) as a `Batches` stream (a list of two arrays is two
    batches here, not an `(x, y)` pair). A graph model's several inputs: a dict by input name
    or a tuple in input order, as `Inputs`."""
    from crosstrain.data.arrays import as_inputs_of

    model = spec.model if spec is not None else None
    if (
        model is not None
        and model.is_graph
        and (
            isinstance(data, dict)
            or (
                isinstance(data, (tuple, list))
                and all(hasattr(p, "shape") for p in data)
                and len(data) == len(model.inputs or [0]) > 1
            )
        )
    ):
        inputs = as_inputs_of(model, data, where)
        check_input_shape(inputs, spec, where)
        check_input_ids(inputs, spec, where)
        return inputs
    if isinstance(data, (tuple, list)):
        batch_like = all(hasattr(part, "shape") or isinstance(part, (dict, tuple)) for part in data)
        data = Batches(list(data)) if data and batch_like else np.asarray(data)
    inputs = data if isinstance(data, np.ndarray) else as_batches(data, where, spec)
    if inputs is None:
        inputs = np.asarray(data)
    if isinstance(inputs, np.ndarray):
        check_input_shape(inputs, spec, where)
        check_input_ids(inputs, spec, where)
    return inputs


def _length(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


def check_streams(spec: Spec, train: Any, val: Any, val_data: Any) -> None:
    """Refuses what the streams of a fit cannot do: a one-shot iterator read in several epochs,
    a `validation_split` (a stream cannot be split; pass `val_data`), and a schedule that decays
    over a run whose length is unknown. Arrays pass."""
    bounded = spec.trainer.max_steps is not None  # may end inside the first pass
    for stream in (train, val):
        one_shot = isinstance(stream, Batches) and stream.one_shot
        if one_shot and spec.trainer.max_epochs > 1 and not (bounded and stream is train):
            raise DataError(
                f"{stream.where}: a one-shot iterator ({type(stream.source).__name__}) can be "
                f"read only once, but trainer.max_epochs is {spec.trainer.max_epochs}; pass a "
                "re-iterable (a list, a DataLoader, an object whose __iter__ starts over) or "
                "set trainer.max_epochs: 1"
            )
    if not isinstance(train, Batches):
        return
    if train.one_shot and train.length is None and not bounded:
        warnings.warn(
            f"{train.where}: an iterator of unknown length ({type(train.source).__name__}) and "
            "no trainer.max_steps: the first epoch ends only when the iterator is used up (an "
            "endless generator never ends); set trainer.max_steps to bound the fit",
            stacklevel=2,
        )
    if spec.data.validation_split and val_data is None:
        raise DataError(
            f"data: data.validation_split is {spec.data.validation_split}, but streamed data "
            f"({type(train.source).__name__}) cannot be split; pass val_data=... or set "
            "data.validation_split: 0"
        )
    schedule = spec.schedule
    if train.length is not None or spec.trainer.max_steps is not None:
        return
    if schedule is not None and schedule.needs_run_length():
        raise DataError(
            f"data: the number of batches per epoch is unknown (the loader has no len()), so the "
            f"{schedule.name!r} schedule cannot know the run's length; set trainer.max_steps, "
            "the schedule's decay_steps where it has one, or wrap the data as crosstrain.data.batches.Batches(data, steps_per_epoch=N)"
        )


def array_kind(program: Any) -> str:
    """What the Program takes as batch arrays (`torch`, `jax` or `numpy`)."""
    kind = program.array_kind
    return kind if kind in ARRAY_KINDS else "numpy"


def eval_order(data: Any) -> np.ndarray | None:
    """Rows of an evaluation pass in order (arrays), or None for a stream (read as it comes)."""
    return None if isinstance(data, Batches) else np.arange(len(data))


def array_units(
    order: np.ndarray,
    slices: list[slice],
    start: int,
    group_size: Callable[[int], int],
    make_batch: Callable[[np.ndarray, int], Any],
) -> Iterator[tuple[int, int, Any]]:
    """`(batches in the call, rows, step input)` over arrays read in `order` from batch
    `start`; `group_size(index)` says how many batches go into one call (`steps_per_execution`)."""
    index = start
    while index < len(slices):
        group = group_size(index)
        cut = order[slices[index].start : slices[index + group - 1].stop]
        yield group, len(cut), make_batch(cut, group)
        index += group


def as_data(value: Any, where: str, spec: Spec) -> Any:
    """`fit(data=...)`/`val_data` as ArrayData (arrays) or Batches (anything yielding batches)."""
    from crosstrain.data.arrays import as_array_data, check_array_kinds

    model = spec.model if spec is not None else None
    data = as_batches(value, where, spec) or as_array_data(value, where, model)
    if not isinstance(data, Batches):
        check_array_kinds(data, where)
        check_input_shape(data.x, spec, where)
        check_input_ids(data.x, spec, where)
        check_targets(data.y, spec, where)
    return data


def accumulation_groups(
    units: Iterator[tuple[int, int, Any]], size: int
) -> Iterator[tuple[int, int, Any]]:
    """Micro-batch units `(1, rows, batch)` grouped `size` at a time (the last group of a pass
    may be shorter) as `(1, rows of the group, [batch, ...])`: one optimizer step each
    (`trainer.accumulate_grad_batches`)."""
    group: list[Any] = []
    count = 0
    for _, micro_rows, batch in units:
        group.append(batch)
        count += micro_rows
        if len(group) == size:
            yield 1, count, group
            group, count = [], 0
    if group:
        yield 1, count, group


def split_micro_batches(batches: list[Any]) -> tuple[list[Any], Any]:
    """The micro-batches of one accumulated step as `(equal, last)`: the leading batches that
    all have the first one's rows (to be stacked and scanned in one compiled call) and the last
    batch when it is shorter (else None). Any other mix of sizes is a DataError."""
    sizes = [rows(b[1]) for b in batches]
    if all(size == sizes[0] for size in sizes):
        return batches, None
    if all(size == sizes[0] for size in sizes[:-1]) and sizes[-1] < sizes[0]:
        return batches[:-1], batches[-1]
    raise DataError(
        f"trainer.accumulate_grad_batches: the micro-batches of one optimizer step have "
        f"{sizes} rows; all but a shorter last one must be equal"
    )
