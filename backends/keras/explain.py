"""The Keras backend's lines of the fit plan (`Backend.explain`): engine, precision,
compilation and distribution, decided from the spec alone (no Keras import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .device import PRECISIONS, engine_of

if TYPE_CHECKING:
    from crosstrain.plugin.protocol import RunEnv
    from crosstrain.spec.schema import Spec

EXECUTION = {
    "jax": "compiled: jax.jit of a stateless step, state donated (as Keras's JAXTrainer)",
    "tensorflow": "tf.function steps (XLA with trainer.compile or on a GPU)",
    "torch": "eager steps with torch.autograd.grad (as Keras's TorchTrainer)",
}


def explain(spec: Spec, env: RunEnv) -> dict[str, str]:
    """Engine, precision, execution and sharding of a Keras fit."""
    engine = engine_of(env.backend or "keras")
    found = PRECISIONS.get(env.precision)
    policy = f"Keras dtype policy '{found.policy}'" if found else "not supported here"
    lines = {
        "engine": engine,
        "precision": f"{env.precision}: {policy}"
        + (", LossScaleOptimizer" if found is not None and found.loss_scaling else ""),
        "execution": EXECUTION.get(engine, engine),
    }
    if env.devices > 1 and engine == "jax":
        from crosstrain.backends.jax.explain import processes_line

        lines["processes"] = processes_line(env.devices)
    if env.devices > 1:
        lines["sharding"] = (
            f"keras.distribution.DataParallel over {env.devices} devices: batches split, "
            "variables replicated"
        )
    return lines
