"""`python -m crosstrain.cli ...`: the same as the `crosstrain` command."""

from crosstrain.cli.main import run

run()
