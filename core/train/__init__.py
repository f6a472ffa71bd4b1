"""The one training loop and what it owns: `trainer` (epochs, hooks, checkpoints,
interrupts), `run_length` (steps, computed once), `resume` (the loop's record in a checkpoint),
`result`, `callbacks` and `loggers` (the plugin-facing base classes), `rundir` (run directories)
and `hook_errors` (a plugin hook that fails mid-fit)."""
