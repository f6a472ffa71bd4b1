"""Hand-written PyTorch for the benchmark tasks: the plain loop and PyTorch Lightning.

The plain loop is what a PyTorch user writes: the data as tensors, `torch.randperm` per
epoch, `x[idx]` batches, `torch.optim.Adam(foreach=True)`, the loss read every `PULL_EVERY`
steps. Lightning gets the same model and optimizer through a `LightningModule`, and the same
batched gather through a dataset with `__getitems__` (no per-sample collation).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import DIM, HEADS, PULL_EVERY, VOCAB, Task


class _Block(nn.Module):
    """Embedding, pre-norm self-attention and MLP residuals, mean pool, classifier (task D)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.norm1, self.norm2 = nn.LayerNorm(DIM, eps=1e-3), nn.LayerNorm(DIM, eps=1e-3)
        self.attention = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))
        self.head = nn.Linear(DIM, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        a = self.norm1(h)
        h = h + self.attention(a, a, a, need_weights=False)[0]
        h = h + self.mlp(self.norm2(h))
        return self.head(h.mean(dim=1))


def make_model(task: Task) -> nn.Module:
    """The task's model as idiomatic torch (channels-first for the CNN)."""
    if task.key == "D":
        return _Block()
    if task.key == "C":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16, eps=1e-3, momentum=0.1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )
    sizes = [task.input_shape[0]] + [layer["units"] for layer in task.layers if "units" in layer]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _tensors(task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = task.data()
    if task.key == "C":
        x = x.transpose(0, 3, 1, 2).copy()
    return torch.from_numpy(x), torch.from_numpy(y)


def run_native(task: Task) -> dict[str, Any]:
    """The plain loop; returns `epoch_s`, `epoch_cpu_s`, `ttfs_s` (model build + first step) and `final_loss`."""
    x, y = _tensors(task)
    start = time.perf_counter()
    model = make_model(task)
    optimizer = torch.optim.Adam(model.parameters(), lr=task.lr, foreach=True)
    generator = torch.Generator().manual_seed(0)
    epochs, cpu, ttfs, last = [], [], None, float("nan")
    for _ in range(task.epochs):
        began, began_cpu, pending = time.perf_counter(), time.process_time(), []
        order = torch.randperm(len(x), generator=generator)
        for i in range(task.steps_per_epoch):
            idx = order[i * task.batch : (i + 1) * task.batch]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            pending.append(loss.detach())
            if ttfs is None:
                loss.item()
                ttfs = time.perf_counter() - start
            if len(pending) == PULL_EVERY:
                last, pending = torch.stack(pending).mean().item(), []
        if pending:
            last = torch.stack(pending).mean().item()
        epochs.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return {"epoch_s": epochs, "epoch_cpu_s": cpu, "ttfs_s": ttfs, "final_loss": last}


class _Batched(torch.utils.data.Dataset):
    """A dataset that hands out whole batches (`__getitems__`), like the other loops."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(index)
        return self.x[rows], self.y[rows]


def _identity(batch: Any) -> Any:
    return batch


def run_lightning(task: Task, lean: bool) -> dict[str, Any]:
    """`lightning.Trainer.fit` with its defaults, or `lean` (no progress bar, logger, checkpoints,
    model summary); returns what `run_native` returns."""
    import warnings

    import lightning as L

    warnings.filterwarnings("ignore")
    x, y = _tensors(task)
    start = time.perf_counter()

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.ttfs, self.last = make_model(task), None, None
            self.epochs: list[float] = []
            self.cpu_times: list[float] = []
            self.began = self.began_cpu = 0.0

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = F.cross_entropy(self.net(batch[0]), batch[1])
            if not lean:
                self.log("train_loss", loss)
            self.last = loss.detach()
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=task.lr, foreach=True)

        def on_train_batch_end(self, *args: Any) -> None:
            if self.ttfs is None:
                self.ttfs = time.perf_counter() - start

        def on_train_epoch_start(self) -> None:
            self.began, self.began_cpu = time.perf_counter(), time.process_time()

        def on_train_epoch_end(self) -> None:
            self.epochs.append(time.perf_counter() - self.began)
            self.cpu_times.append(time.process_time() - self.began_cpu)

    module = Module()
    loader = torch.utils.data.DataLoader(
        _Batched(x, y), batch_size=task.batch, shuffle=True, collate_fn=_identity
    )
    options: dict[str, Any] = {"max_epochs": task.epochs, "accelerator": "cpu", "devices": 1}
    if lean:
        options.update(
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
    with tempfile.TemporaryDirectory() as root:
        L.Trainer(default_root_dir=root, **options).fit(module, loader)
    return {
        "epoch_s": module.epochs,
        "epoch_cpu_s": module.cpu_times,
        "ttfs_s": module.ttfs,
        "final_loss": float(module.last),
    }
