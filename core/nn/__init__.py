"""The math of a model, framework-free: layers, losses, metrics, optimizers and schedules.

`layers` holds the layer vocabulary (options, shapes, canonical parameters, numpy forward);
`model` derives the layer tree of a spec; `flops` counts its work; `losses`, `metrics` and
`optim` are written once against the array API and used by every backend.
"""
