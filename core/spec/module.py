"""`Module`: the same spec written as a Python class, for people who prefer code to YAML.

Example:
    >>> import crosstrain as ct
    >>> class Tiny(ct.Module):
    ...     input_shape = (4,)
    ...     def layers(self):
    ...         return [ct.layers.Dense(8), ct.layers.ReLU(), ct.layers.Dense(3)]
    ...     def loss(self, xp, logits, targets):
    ...         return ct.losses.cross_entropy(xp, logits, targets) + 1e-4 * xp.mean(logits**2)
    >>> Tiny().to_spec().model.layers[0].units
    8
"""

from __future__ import annotations

from typing import Any

from crosstrain.nn.losses import cross_entropy
from crosstrain.nn.optim import Adam
from crosstrain.spec.schema import Spec, validate_spec


class Module:
    """Override what differs from the defaults; `to_spec` validates it into a `Spec`."""

    input_shape: tuple[int, ...] = ()
    input_dtype: str | None = None
    inputs: dict[str, Any] | None = None
    """Named inputs (`crosstrain.Input(shape, dtype)`) of a `forward` graph; default: one
    input, `input`, of `input_shape`."""
    name: str | None = None
    seed: int = 0

    def layers(self) -> list[Any]:
        """The layers, as `crosstrain.nn.layers` objects or `{type: ...}` mappings."""
        raise NotImplementedError(f"{type(self).__name__} must define layers()")

    def forward(self, *inputs: Any) -> Any:
        """Instead of `layers`: a graph, Keras functional style. Called once by `to_spec` with
        one symbol per model input; layers called on symbols become nodes (a layer object called
        twice shares its parameters; `Dense(n)(x, tie=embedding)`); returns the output symbol.
        """
        raise NotImplementedError

    def _model(self) -> dict[str, Any]:
        if type(self).forward is Module.forward:
            model: dict[str, Any] = {"input_shape": list(self.input_shape), "layers": self.layers()}
        else:
            from crosstrain.nn.functional import Input, trace

            inputs = self.inputs or {
                "input": Input(tuple(self.input_shape), self.input_dtype or "float32")
            }
            model = trace(inputs, self.forward)
        if self.input_dtype and self.inputs is None and "layers" in model:
            model["input_dtype"] = self.input_dtype
        return model

    def loss(self, xp: Any, outputs: Any, targets: Any) -> Any:
        """Array-API loss (any math that runs on every backend); default cross-entropy."""
        return cross_entropy(xp, outputs, targets)

    def metrics(self) -> list[Any]:
        return ["accuracy"]

    def optimizer(self) -> Any:
        return Adam()

    def schedule(self) -> Any:
        return None

    def data(self) -> dict[str, Any]:
        """The `data:` section (source, batch size ...); empty when data is passed to `fit`."""
        return {}

    def trainer(self) -> dict[str, Any]:
        """The `trainer:` section."""
        return {}

    def to_spec(self) -> Spec:
        model = self._model()
        overridden = type(self).loss is not Module.loss
        data: dict[str, Any] = {
            "name": self.name or type(self).__name__,
            "seed": self.seed,
            "model": model,
            "loss": {"name": f"{type(self).__name__}.loss", "fn": self.loss}
            if overridden
            else "cross_entropy",
            "metrics": self.metrics(),
            "optimizer": self.optimizer(),
            "data": self.data(),
            "trainer": self.trainer(),
        }
        schedule = self.schedule()
        if schedule is not None:
            data["schedule"] = schedule
        return validate_spec(data, source=type(self).__name__)
