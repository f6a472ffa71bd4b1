"""Side-by-side timings: crosstrain on each backend vs hand-written native loops, Lightning
and Keras `fit`. Entry point: `python -m benchmarks` (see `__main__.py`)."""
