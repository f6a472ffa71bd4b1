"""One GPU-benchmark run in this process: `crosstrain.fit` or the hand-written AMP loop.

Both sides train the same network from identical initial parameters on the same host batches
in the same order (`crosstrain.data.arrays.epoch_order`, shuffled per epoch), with Adam, bf16 autocast,
cuDNN autotuning, one host read of the loss per epoch, and optionally `torch.compile`. Every
epoch is timed between two `torch.cuda.synchronize()` calls; the first is warm-up (cuDNN
autotuning, compilation, allocator) and is reported separately, not in the throughput.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .gpu_models import make_task, native_model
from .tasks import Task


def spec_dict(task: Task, device: str, compile_: bool) -> dict[str, Any]:
    """The task's crosstrain spec for this benchmark: bf16-mixed on `device`, nothing extra."""
    spec = task.spec()
    spec["name"] = f"gpu-bench-{task.key}"
    spec["trainer"].update(
        precision="bf16-mixed",
        accelerator=device,
        compile=compile_,
        cudnn_benchmark=True,
        log_every_n_steps=task.steps_per_epoch,
    )
    return spec


def _synchronizer(device: str) -> Any:
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def run_crosstrain(task: Task, device: str, compile_: bool) -> dict[str, Any]:
    """`crosstrain.fit` on the torch backend; epoch wall times from a callback."""
    import crosstrain as ct

    sync = _synchronizer(device)

    class EpochTimer(ct.Callback):
        def __init__(self) -> None:
            self.epochs: list[float] = []
            self.began = 0.0

        def on_epoch_start(self, stage: str) -> None:
            if stage == "train":
                sync()
                self.began = time.perf_counter()

        def on_epoch_end(self, stage: str) -> None:
            if stage == "train":
                sync()
                self.epochs.append(time.perf_counter() - self.began)

    x, y = task.data()
    timer = EpochTimer()
    spec = ct.load_spec(spec_dict(task, device, compile_))
    result = ct.fit(spec, backend="torch", data=(x, y), run_dir=False, callbacks=[timer])
    return {"epoch_s": timer.epochs, "final_loss": result.metrics["train_loss"]}


def run_native(task: Task, device: str, compile_: bool, tiny: bool) -> dict[str, Any]:
    """The hand-written loop: idiomatic module (channels-last for the CNN) with crosstrain's
    initial values, fused Adam (foreach on CPU), `torch.autocast(bfloat16)`, pinned host
    batches copied with `non_blocking=True`."""
    import crosstrain as ct
    import torch
    import torch.nn.functional as F
    from crosstrain.data.arrays import epoch_order
    from crosstrain.nn.model import init_params

    from .gpu_models import load_canonical

    spec = ct.load_spec(spec_dict(task, device, compile_))
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    images = task.key == "cnn"
    model = native_model(task.key, tiny)
    load_canonical(model, init_params(spec.model, spec.seed))
    model = model.to(dev, memory_format=torch.channels_last) if images else model.to(dev)
    kernels = {"fused": True} if dev.type == "cuda" else {"foreach": True}
    optimizer = torch.optim.Adam(model.parameters(), lr=task.lr, eps=1e-8, **kernels)
    forward = torch.compile(model) if compile_ else model
    pin, sync = dev.type == "cuda", _synchronizer(device)
    x, y = task.data()
    seen, last, epochs = len(x), float("nan"), []
    for epoch in range(task.epochs):
        sync()
        began = time.perf_counter()
        order, pending = epoch_order(seen, spec.seed, epoch, True), []
        for i in range(task.steps_per_epoch):
            rows = order[i * task.batch : (i + 1) * task.batch]
            inputs, targets = torch.from_numpy(x[rows]), torch.from_numpy(y[rows])
            if pin:
                inputs, targets = inputs.pin_memory(), targets.pin_memory()
            inputs = inputs.to(dev, non_blocking=pin)
            targets = targets.to(dev, non_blocking=pin)
            if images:
                inputs = inputs.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels-last
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(forward(inputs), targets)
            loss.backward()
            optimizer.step()
            pending.append(loss.detach())
        last = torch.stack(pending).mean().item()
        sync()
        epochs.append(time.perf_counter() - began)
    return {"epoch_s": epochs, "final_loss": float(last)}


def run(config: dict[str, Any]) -> dict[str, Any]:
    """Measures one configuration: `model`, `runner` (`crosstrain`/`native`), `compile`,
    `device`, `batch`, `steps` (per epoch), `epochs` (the first is warm-up), `tiny`."""
    import torch

    task = make_task(
        config["model"], config["batch"], config["steps"], config["epochs"], config["tiny"]
    )
    device, compile_ = config["device"], config["compile"]
    if device == "cpu":
        torch.set_num_threads(1)
    if config["runner"] == "crosstrain":
        out = run_crosstrain(task, device, compile_)
    else:
        out = run_native(task, device, compile_, config["tiny"])
    timed = out["epoch_s"][1:] or out["epoch_s"]
    steps = len(timed) * task.steps_per_epoch
    cuda = device == "cuda"
    return {
        **config,
        **out,
        "warmup_s": out["epoch_s"][0],
        "samples_per_s": steps * task.batch / float(np.sum(timed)),
        "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
