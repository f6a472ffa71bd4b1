"""Parameter groups: per-parameter lr multipliers and weight decay, resolved once in core.

`optimizer.param_groups` is a list of groups, each selecting parameters by a regular expression
over canonical names (`match`, `re.search`) and/or by `kind`, with its own `lr_multiplier` and
`weight_decay`; the first group that selects a parameter wins, a parameter in no group keeps the
optimizer's `lr` and `weight_decay`. `optimizer.decay: matrices_only` is nanoGPT's rule: weight
decay only on parameters with two or more dimensions (kernels, and, as nanoGPT does with `wte`
and `wpe`, embedding tables), none on biases and norm parameters; a group's own `weight_decay`
still wins over it.

Kinds, decided from the layer tree (`crosstrain.nn.model.plan`):
- `bias`: a parameter whose last name segment is `bias` (`dense/bias`, `block/attn/q/bias`);
- `norm`: the parameters of a BatchNorm, LayerNorm or RMSNorm (any layer type ending in `Norm`);
- `embedding`: the tables of Embedding and PositionEmbedding;
- `matrix`: any other parameter with two or more dimensions (Dense/Conv kernels ...).

`resolve_param_options(optimizer, model)` turns this into `{canonical name: ParamOptions}` for the
trainable parameters whose options differ from the optimizer's; every backend's optimizer takes
that mapping (`reference_step`, `update_tree`, torch, jax, Keras).
"""

from __future__ import annotations

import re
from typing import Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    field_validator,
    model_validator,
)


class ParamOptions(NamedTuple):
    """What may differ between parameters: a multiplier of the lr and the weight decay."""

    lr_scale: float = 1.0
    weight_decay: float | None = None


Kind = Literal["bias", "norm", "embedding", "matrix"]
KINDS: tuple[str, ...] = ("bias", "norm", "embedding", "matrix")
EMBEDDING_TYPES = ("Embedding", "PositionEmbedding")


class ParamGroup(BaseModel):
    """One parameter group: which parameters (`match` and/or `kind`) and their options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    match: str | None = Field(
        None, description="regular expression searched in canonical names (`re.search`)"
    )
    kind: Kind | None = Field(None, description="bias, norm, embedding or matrix")
    lr_multiplier: NonNegativeFloat = Field(1.0, description="times the optimizer's lr")
    weight_decay: NonNegativeFloat | None = Field(
        None, description="this group's weight decay (default: the optimizer's)"
    )

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a regular expression: {err}") from None
        return value

    @model_validator(mode="after")
    def _selects(self) -> ParamGroup:
        if self.match is None and self.kind is None:
            raise ValueError("a parameter group needs `match` (a regex) or `kind`")
        return self

    def selects(self, name: str, kind: str) -> bool:
        """Whether the parameter `name` of kind `kind` is in this group (both given: both)."""
        if self.kind is not None and self.kind != kind:
            return False
        return self.match is None or re.search(self.match, name) is not None


def param_kind(layer: Any, pname: str, shape: tuple[int, ...]) -> str | None:
    """The kind of parameter `pname` (its name inside the layer) of `layer`; None: no kind
    (a 1-d parameter that is not a bias, e.g. an LSTM's ... none today)."""
    kind_name = str(getattr(layer, "type", type(layer).__name__))
    if kind_name.endswith("Norm"):
        return "norm"
    if kind_name in EMBEDDING_TYPES:
        return "embedding"
    if pname.rsplit("/", 1)[-1] == "bias":
        return "bias"
    if len(shape) >= 2:
        return "matrix"
    return None


def trainable_params(model: Any) -> dict[str, tuple[str | None, tuple[int, ...]]]:
    """Canonical name → (kind, shape) of the model's trainable parameters, in layer order."""
    from crosstrain.nn.model import frozen_params, node_params, plan, walk

    frozen = frozen_params(model)
    out: dict[str, tuple[str | None, tuple[int, ...]]] = {}
    for node in walk(plan(model)):
        for pname, spec in node_params(node).items():
            name = f"{node.name}/{pname}"
            if spec.trainable and name not in frozen:
                shape = tuple(spec.shape)
                out[name] = (param_kind(node.layer, pname, shape), shape)
    return out


def group_issues(optimizer: Any, model: Any) -> list[tuple[str, str]]:
    """(path, message) for each group that selects no trainable parameter of `model`."""
    groups = getattr(optimizer, "param_groups", None) or ()
    if not groups or model is None:
        return []
    params = trainable_params(model)
    issues = []
    for index, group in enumerate(groups):
        if not any(group.selects(n, k or "") for n, (k, _) in params.items()):
            what = " and ".join(
                part
                for part in (
                    f"match {group.match!r}" if group.match is not None else "",
                    f"kind {group.kind!r}" if group.kind is not None else "",
                )
                if part
            )
            shown = ", ".join(list(params)[:6]) + (", ..." if len(params) > 6 else "")
            issues.append(
                (
                    f"optimizer.param_groups[{index}]",
                    f"group {index} ({what}) selects no trainable parameter; parameters: {shown}",
                )
            )
    return issues


def resolve_param_options(optimizer: Any, model: Any) -> dict[str, ParamOptions]:
    """`{canonical name: ParamOptions}` from `optimizer.param_groups` and `optimizer.decay`, only
    for trainable parameters whose lr multiplier or weight decay differs from the optimizer's
    (so an optimizer without groups gets `{}` and keeps every backend's fast path)."""
    groups = getattr(optimizer, "param_groups", None) or ()
    decay_rule = getattr(optimizer, "decay", None)
    if (not groups and decay_rule is None) or model is None:
        return {}
    out: dict[str, ParamOptions] = {}
    for name, (kind, shape) in trainable_params(model).items():
        group = next((g for g in groups if g.selects(name, kind or "")), None)
        scale = 1.0 if group is None else float(group.lr_multiplier)
        decay = None if group is None else group.weight_decay
        if decay is None and decay_rule == "matrices_only" and len(shape) < 2:
            decay = 0.0
        if decay is not None and decay == optimizer.weight_decay:
            decay = None
        if scale != 1.0 or decay is not None:
            out[name] = ParamOptions(scale, None if decay is None else float(decay))
    return out
