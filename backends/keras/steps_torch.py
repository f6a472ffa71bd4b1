"""Eager steps for the torch engine of the Keras backend, as Keras's TorchTrainer runs them:
`torch.autograd.grad` of the objective, then the optimizer's update under `no_grad` (see
`steps.py` for the other engines and the shared step contract)."""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from .steps import Objective, Steps, with_grad_norm


class TorchSteps(Steps):
    """Eager steps for the torch engine (see the module docstring)."""

    def __init__(
        self, model: Any, optimizer: Any, objective: Objective, compile_hint: bool = False
    ):
        super().__init__(model, optimizer, objective, compile_hint)
        import torch

        self.torch = torch

    def _tensor(self, array: np.ndarray) -> Any:
        if isinstance(array, tuple):  # a graph's several inputs
            return tuple(ops.convert_to_tensor(part) for part in array)
        return ops.convert_to_tensor(array)

    def train(self, x: np.ndarray, y: np.ndarray) -> Any:
        variables = self.model.trainable_variables
        out = self.model(self._tensor(x), training=True)
        loss, report = self.objective(out, self._tensor(y))
        grads = self.torch.autograd.grad(
            self.optimizer.scale_loss(loss), [v.value for v in variables]
        )
        with self.torch.no_grad():
            self.optimizer.apply(list(grads), variables)
            if self.grad_norm:
                report = with_grad_norm(report, list(grads))
        return report.detach()

    def train_many(self, xs: np.ndarray, ys: np.ndarray) -> Any:
        return self.torch.stack([self.train(x, y) for x, y in zip(xs, ys, strict=True)])

    def accumulate(self, xs: np.ndarray, ys: np.ndarray, tail: Any) -> Any:
        """Eager: each micro-batch's gradients times its rows, summed, divided by all rows."""
        variables = self.model.trainable_variables
        batches = list(zip(xs, ys, strict=True)) + ([tail] if tail is not None else [])
        total: list[Any] | None = None
        reports, count = [], 0
        for x, y in batches:
            out = self.model(self._tensor(x), training=True)
            loss, report = self.objective(out, self._tensor(y))
            grads = self.torch.autograd.grad(
                self.optimizer.scale_loss(loss), [v.value for v in variables]
            )
            rows = len(x)
            scaled = [g * rows for g in grads]
            total = scaled if total is None else [t + g for t, g in zip(total, scaled, strict=True)]
            reports.append(report.detach())
            count += rows
        grads = [t / count for t in total or []]
        reports_tensor = self.torch.stack(reports)
        with self.torch.no_grad():
            self.optimizer.apply(grads, variables)
            if self.grad_norm:
                norm = with_grad_norm(reports_tensor[0], grads)[-1]
                column = norm.reshape(1, 1).expand(len(reports), 1)
                reports_tensor = self.torch.cat([reports_tensor, column], dim=1)
        return reports_tensor

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Any:
        with self.torch.no_grad():
            return self.objective(self.model(self._tensor(x), training=False), self._tensor(y))[1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        from .model import to_numpy

        with self.torch.no_grad():
            return to_numpy(self.model(self._tensor(x), training=False))

    def to_host(self, outputs: list[Any]) -> np.ndarray:
        width = outputs[0].shape[-1]
        return self.torch.cat([o.reshape(-1, width) for o in outputs]).cpu().numpy()
