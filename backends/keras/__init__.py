"""The Keras 3 backend: one functional `keras.Model` on the engine the user picks
(`keras:tensorflow`, `keras:jax`, `keras:torch`; plain `keras` = `KERAS_BACKEND`, else tensorflow).

Importing this package imports neither Keras nor any engine: it only registers `KerasBackend`,
which imports Keras when it builds a program or lists devices. One process holds one engine.
"""

from __future__ import annotations

from crosstrain.plugin.hookspecs import hookimpl

from .plugin import KerasBackend

__all__ = ["KerasBackend", "crosstrain_add_backends"]


@hookimpl
def crosstrain_add_backends() -> list[KerasBackend]:
    """The Keras backend, registered like any third party's."""
    return [KerasBackend()]
