"""Data: the `data:` section of a spec, in-memory arrays, the seeded split and batch order
(`arrays`), streaming sources read once per epoch (`batches`) and the checks of targets against
the loss and the model's output (`targets`)."""
