"""`SpecOptimizer`'s update on the torch engine as `torch._foreach_*` kernels.

The same rules as `SpecOptimizer.update_step` (and `crosstrain.nn.optim.reference_step`), applied
to all parameters at once instead of one small Keras op at a time: the eager torch engine pays
per op, so this is most of the optimizer's cost there. The learning rate is folded into the
denominators, so each rule allocates at most one temporary list (large models are bound by
memory traffic here).
"""

from __future__ import annotations

from typing import Any

import torch
from crosstrain.nn.optimizers import SGD, Adam, AdamW, RMSprop

FOREACH = (SGD, Adam, AdamW, RMSprop)
"""The optimizer classes with a foreach fast path (exactly these; a subclass runs its rule)."""


def foreach_update(opt: Any, grads: list[Any], variables: list[Any], learning_rate: Any) -> bool:
    """Updates `variables` (Keras variables) and `opt.slots` in place; call under `no_grad`.
    False (nothing done) when the optimizer has no fast path here."""
    o = opt.spec
    if type(o) not in FOREACH or getattr(opt, "overrides", None):
        return False  # parameter groups: the per-variable rule
    params = [v.value for v in variables]
    index = [opt._get_variable_index(v) for v in variables]
    slot = {name: [values[i].value for i in index] for name, values in opt.slots.items()}
    dtype = params[0].dtype
    lr = getattr(learning_rate, "value", learning_rate)
    lr = torch.as_tensor(lr, dtype=dtype, device=params[0].device)
    g = [grad.to(p.dtype) for grad, p in zip(grads, params, strict=True)]
    if not isinstance(o, AdamW) and o.weight_decay:
        g = torch._foreach_add(g, params, alpha=o.weight_decay)
    if isinstance(o, SGD):
        if o.momentum:
            torch._foreach_mul_(slot["momentum"], o.momentum)
            torch._foreach_add_(slot["momentum"], g)
            g = (
                torch._foreach_add(g, slot["momentum"], alpha=o.momentum)
                if o.nesterov
                else slot["momentum"]
            )
        torch._foreach_sub_(params, torch._foreach_mul(g, lr))
    elif isinstance(o, Adam):
        t = torch.as_tensor(opt.iterations.value + 1, dtype=dtype)
        if isinstance(o, AdamW):
            torch._foreach_mul_(params, 1.0 - lr * o.weight_decay)
        torch._foreach_mul_(slot["m"], o.beta_1)
        torch._foreach_add_(slot["m"], g, alpha=1.0 - o.beta_1)
        torch._foreach_mul_(slot["v"], o.beta_2)
        torch._foreach_addcmul_(slot["v"], g, g, value=1.0 - o.beta_2)
        denominator = torch._foreach_sqrt(slot["v"])
        torch._foreach_div_(denominator, torch.sqrt(1.0 - o.beta_2**t))
        torch._foreach_add_(denominator, o.epsilon)
        torch._foreach_mul_(denominator, (1.0 - o.beta_1**t) / lr)
        torch._foreach_addcdiv_(params, slot["m"], denominator, value=-1.0)
    else:
        torch._foreach_mul_(slot["rms"], o.rho)
        torch._foreach_addcmul_(slot["rms"], g, g, value=1.0 - o.rho)
        denominator = torch._foreach_sqrt(slot["rms"])
        torch._foreach_add_(denominator, o.epsilon)
        if o.momentum:
            torch._foreach_mul_(slot["momentum"], o.momentum)
            torch._foreach_addcdiv_(slot["momentum"], g, denominator)
            torch._foreach_sub_(params, torch._foreach_mul(slot["momentum"], lr))
        else:
            torch._foreach_div_(denominator, lr)
            torch._foreach_addcdiv_(params, g, denominator, value=-1.0)
    return True
