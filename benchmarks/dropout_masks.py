"""What `model.dropout_masks: shared` costs: the same MLP with dropout, shared masks (the hash
of `crosstrain.nn.dropout`, evaluated in the compiled step) against each framework's own
dropout. How it is timed: `spec_variants.py`.

    python -m benchmarks.dropout_masks [--backends torch,jax,keras:jax] [--repeats 3]
"""

from __future__ import annotations

from typing import Any

from .spec_variants import BATCH, Comparison, main, trainer_options


def spec(masks: str) -> dict[str, Any]:
    dropout = {"type": "Dropout", "rate": 0.3}
    return {
        "name": f"dropout-masks-{masks}",
        "seed": 0,
        "model": {
            "input_shape": [64],
            "dropout_masks": masks,
            "layers": [
                {"type": "Dense", "units": 256},
                {"type": "ReLU"},
                dropout,
                {"type": "Dense", "units": 256},
                {"type": "ReLU"},
                dropout,
                {"type": "Dense", "units": 10},
            ],
        },
        "data": {"batch_size": BATCH, "shuffle": False},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 1e-3},
        "trainer": trainer_options(),
    }


COMPARISON = Comparison(
    module="benchmarks.dropout_masks",
    name="dropout-masks",
    title="Shared vs native dropout masks",
    model="a 64-256-ReLU-Dropout-256-ReLU-Dropout-10 MLP (rate 0.3)",
    variants=("shared", "native"),
    labels=("shared masks", "native masks"),
    spec=spec,
)

if __name__ == "__main__":
    raise SystemExit(main(COMPARISON))
