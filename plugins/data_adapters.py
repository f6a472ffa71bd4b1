"""Built-in data adapters: torch `DataLoader`/`Dataset`, `tf.data.Dataset`, grain, jax arrays.

Each adapter recognises its library's objects by class module, so nothing is imported until a
fit is given such data; conversions pick the fewest copies for the Program's `array_kind`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from crosstrain.data.arrays import batch_slices, epoch_order
from crosstrain.data.batches import DataAdapter, from_library
from crosstrain.errors import DataError
from crosstrain.plugin.hookspecs import hookimpl


class SeededBatchSampler:
    """Batches of indices in core's seeded epoch order, so a torch map-style `Dataset` is read in
    the same order as the same samples given as arrays (and a resumed run continues exactly)."""

    def __init__(self, size: int, batch_size: int, drop_last: bool, shuffle: bool, seed: int):
        self.size, self.batch_size, self.drop_last = size, batch_size, drop_last
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        order = epoch_order(self.size, self.seed, self.epoch, self.shuffle)
        for cut in batch_slices(self.size, self.batch_size, self.drop_last):
            yield order[cut].tolist()

    def __len__(self) -> int:
        return len(batch_slices(self.size, self.batch_size, self.drop_last))


class TorchAdapter(DataAdapter):
    """`torch.utils.data` loaders and data sets; torch tensors for every backend."""

    def wraps(self, data: Any) -> bool:
        return from_library(data, "torch.utils.data")

    def batches(self, data: Any, spec: Any) -> Any:
        from torch.utils.data import DataLoader, IterableDataset

        if isinstance(data, DataLoader):
            return data
        options = spec.data
        if isinstance(data, IterableDataset):
            return DataLoader(data, batch_size=options.batch_size, drop_last=options.drop_last)
        try:
            size = len(data)
        except TypeError:
            raise DataError(
                f"data: the {type(data).__name__} has no len(); give a DataLoader or an IterableDataset"
            ) from None
        sampler = SeededBatchSampler(
            size, options.batch_size, options.drop_last, options.shuffle, spec.seed
        )
        return DataLoader(data, batch_sampler=sampler)

    def handles(self, array: Any) -> bool:
        return from_library(array, "torch")

    def convert(self, array: Any, kind: str) -> Any:
        if kind == "torch":
            return array
        array = array.detach()
        if kind == "jax" and array.device.type == "cpu":
            import jax.numpy as jnp

            try:
                return jnp.from_dlpack(array)  # shares the tensor's memory
            except (TypeError, ValueError, RuntimeError):
                pass  # a dtype or layout DLPack cannot carry: copy through numpy
        return array.cpu().numpy()


class TensorFlowAdapter(DataAdapter):
    """`tf.data.Dataset` (already batched by the user); tensors as numpy (zero-copy on the CPU)."""

    def wraps(self, data: Any) -> bool:
        return from_library(data, "tensorflow.python.data")

    def batches(self, data: Any, spec: Any) -> Any:
        if int(data.cardinality()) == -1 and spec.trainer.max_steps is None:  # INFINITE
            raise DataError(
                "data: the tf.data.Dataset repeats forever; set trainer.max_steps, or take a "
                "finite part of it (dataset.take(n))"
            )
        return data

    def length(self, batches: Any) -> int | None:
        count = int(batches.cardinality())
        return count if count >= 0 else None

    def handles(self, array: Any) -> bool:
        return from_library(array, "tensorflow")

    def convert(self, array: Any, kind: str) -> Any:
        return array.numpy()


class GrainAdapter(DataAdapter):
    """grain `DataLoader`, `MapDataset`, `IterDataset` whose elements are batches (`.batch(n)`);
    grain yields numpy, which every backend takes."""

    def wraps(self, data: Any) -> bool:
        return from_library(data, "grain")


class JaxArrays(DataAdapter):
    """jax arrays in batches: kept on a jax Program, copied to the host for the others."""

    def handles(self, array: Any) -> bool:
        return from_library(array, "jax", "jaxlib")

    def convert(self, array: Any, kind: str) -> Any:
        return array if kind == "jax" else np.asarray(array)


@hookimpl
def crosstrain_add_data_adapters(registry: Any) -> None:
    registry.data_adapters.add("torch", TorchAdapter())
    registry.data_adapters.add("tensorflow", TensorFlowAdapter())
    registry.data_adapters.add("grain", GrainAdapter())
    registry.data_adapters.add("jax", JaxArrays())
