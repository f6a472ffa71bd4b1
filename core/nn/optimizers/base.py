"""The shape of an optimizer: hyperparameters, per-parameter slots and one update rule.

An optimizer is a pydantic model (its fields are the spec's options, Keras's names) whose
class declares the slots it keeps per parameter (`slots`) and writes its rule once against
the array API standard, as optax's `GradientTransformation` (`init`/`update` with named state)
and Keras 3's optimizers (`update_step` in `keras.ops`) do:

- `init(xp, param) -> {slot: array}`: the slots of one parameter before its first update;
- `update(xp, grad, param, slots, count, lr, weight_decay) -> (new_param, new_slots)`: one
  update of one parameter, `count` the 1-based number of this update (a float32 0-d array of
  `xp`), `lr` the learning rate of this update for this parameter (schedule and a parameter
  group's multiplier applied), `weight_decay` this parameter's decay.

Every backend runs `update` inside its own compiled step: torch on tensors under `no_grad`,
jax inside the jitted step over the parameter dict, Keras on its variables with `keras.ops`.
The canonical state of a checkpoint is `<slot>/<param>` → array with the declared slot names
and `slot_shapes`, in the canonical layout, so a run moves between backends. `update_tree` is
the loop over parameters (numpy reference and jax), `param_options` the one place a parameter's
lr multiplier and weight decay are looked up (`overrides`, e.g. from parameter groups).

Example:
    >>> import numpy as np
    >>> from crosstrain.nn.optimizers import SGD
    >>> new, slots = SGD(lr=0.1).update(np, np.ones(2), np.zeros(2), {}, np.float32(1), 0.1, 0.0)
    >>> new.tolist()
    [-0.1, -0.1]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat

from .groups import ParamGroup, ParamOptions


class Optimizer(BaseModel):
    """Base class of every optimizer (built-in or plugin).

    A subclass sets `name: Literal["<name>"] = "<name>"`, its hyperparameters as fields, the
    class variable `slots`, and `update` (and `init` / `slot_shapes` when a slot is not a
    zero array shaped like its parameter).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    clip_norm: PositiveFloat | None = Field(
        None, description="clip the global gradient norm to this value"
    )
    param_groups: tuple[ParamGroup, ...] | None = Field(
        None,
        description="per-parameter lr_multiplier / weight_decay: [{match: REGEX | kind: "
        "bias|norm|embedding|matrix, lr_multiplier, weight_decay}], the first matching group "
        "wins; parameters in no group use the optimizer's lr and weight_decay",
    )
    decay: Literal["matrices_only"] | None = Field(
        None,
        description="matrices_only: weight decay only on parameters with ndim >= 2 (kernels and "
        "embedding tables, as nanoGPT), none on biases and norms; default: every parameter",
    )

    slots: ClassVar[tuple[str, ...]] = ()
    """Canonical names of the per-parameter state (the checkpoint's `<slot>/<param>` keys)."""

    def slot_names(self) -> tuple[str, ...]:
        """The slots this configuration keeps (e.g. none for sgd without momentum)."""
        return self.slots

    def slot_shapes(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Slot → shape for a parameter of canonical `shape` (default: the parameter's)."""
        return {slot: tuple(shape) for slot in self.slot_names()}

    def init(self, xp: Any, param: Any) -> dict[str, Any]:
        """The slots of `param` before its first update (default: zeros)."""
        shapes = self.slot_shapes(tuple(param.shape))
        out = {}
        for slot, shape in shapes.items():
            if shape == tuple(param.shape):
                out[slot] = xp.zeros_like(param)
            else:
                out[slot] = xp.zeros(shape, dtype=param.dtype, device=_device(param))
        return out

    def update(
        self,
        xp: Any,
        grad: Any,
        param: Any,
        slots: dict[str, Any],
        count: Any,
        lr: Any,
        weight_decay: float,
    ) -> tuple[Any, dict[str, Any]]:
        """One update of one parameter: the new parameter and its new slots."""
        raise NotImplementedError(f"optimizer {type(self).__name__} defines no update")

    def param_options(
        self, name: str, overrides: Mapping[str, ParamOptions] | None = None
    ) -> tuple[float, float]:
        """`(lr_scale, weight_decay)` of parameter `name`: an override, else 1 and `weight_decay`."""
        found = (overrides or {}).get(name)
        if found is None:
            return 1.0, self.weight_decay
        decay = self.weight_decay if found.weight_decay is None else found.weight_decay
        return found.lr_scale, decay


def _device(x: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def l2(grad: Any, param: Any, weight_decay: float) -> Any:
    """The gradient with an L2 penalty (PyTorch's `weight_decay` of sgd, adam and rmsprop)."""
    return grad + weight_decay * param if weight_decay else grad


def decoupled(param: Any, lr: Any, weight_decay: float) -> Any:
    """The parameter shrunk by `lr * weight_decay` (adamw; Keras's `weight_decay`)."""
    return param * (1.0 - lr * weight_decay) if weight_decay else param


def update_tree(
    opt: Optimizer,
    xp: Any,
    params: Mapping[str, Any],
    grads: Mapping[str, Any],
    slots: Mapping[str, Mapping[str, Any]],
    count: Any,
    lr: Any,
    overrides: Mapping[str, ParamOptions] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`opt.update` over a dict of parameters (canonical name → array): new params and slots
    (slot → name → array), each cast back to the dtype it had. A missing slot entry starts
    from `opt.init`."""
    new_params: dict[str, Any] = {}
    new_slots: dict[str, dict[str, Any]] = {s: {} for s in opt.slot_names()}
    for name, param in params.items():
        state = {s: slots.get(s, {}).get(name) for s in opt.slot_names()}
        if any(v is None for v in state.values()):
            fresh = opt.init(xp, param)
            state = {s: fresh[s] if v is None else v for s, v in state.items()}
        scale, decay = opt.param_options(name, overrides)
        grad = xp.astype(grads[name], param.dtype)
        p, new = opt.update(xp, grad, param, state, count, lr * scale, decay)
        new_params[name] = xp.astype(p, param.dtype)
        for s in new_slots:
            new_slots[s][name] = xp.astype(new[s], state[s].dtype)
    return new_params, new_slots


def clip_by_global_norm(
    grads: dict[str, np.ndarray], max_norm: float | None
) -> dict[str, np.ndarray]:
    """Scales all gradients by `max_norm / norm` when their global norm exceeds `max_norm`."""
    if max_norm is None:
        return grads
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return {k: (g * scale).astype(g.dtype) for k, g in grads.items()}


def reference_step(
    opt: Optimizer,
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    slots: dict[str, dict[str, np.ndarray]],
    step: int,
    lr: float | None = None,
    overrides: Mapping[str, ParamOptions] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """One update in numpy (float32): the definition every backend's optimizer must match.

    Args:
        opt: the optimizer.
        params, grads: canonical name → array (trainable parameters only).
        slots: slot → name → array (empty dict on the first step).
        step: updates done before this one.
        lr: learning rate for this update (the schedule applied), default `opt.lr`.
        overrides: per-parameter lr multiplier / weight decay.

    Returns:
        New params and new slots.
    """
    lr = opt.lr if lr is None else lr
    grads = clip_by_global_norm(grads, opt.clip_norm)
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    slots = {s: {k: np.asarray(v, np.float32) for k, v in d.items()} for s, d in slots.items()}
    return update_tree(opt, np, params, grads, slots, np.float32(step + 1), lr, overrides)
