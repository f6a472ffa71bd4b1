"""torchrun for `crosstrain fit --devices N`: `python -m crosstrain.backends.torch.torchrun ARGS`.

The same as `python -m torch.distributed.run ARGS`, except that a failed worker ends it with that
worker's exit status and no `ChildFailedError` traceback: the worker has already said what went
wrong (its `error: ...` line, collected by the launcher, or its own traceback). The elastic
agent's log lines (up to ERROR) are left out too unless `LOGLEVEL` is set.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """Runs torchrun with `argv`; 0, or the exit status of the first worker that failed."""
    if "LOGLEVEL" not in os.environ:  # the agent's own log lines (failure, SIGTERM sent ...)
        logging.disable(logging.ERROR)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(list(argv)))
    except ChildFailedError as err:
        _, failure = err.get_first_failure()
        from crosstrain.train.workers import killed_line

        killed = [  # by a signal other than the agent's own SIGTERM to the survivors
            (rank, f) for rank, f in sorted(err.failures.items()) if f.exitcode < 0
        ]
        killed = [item for item in killed if item[1].exitcode != -15] or killed
        for rank, dead in killed[:1]:  # the worker could not say why itself
            print(killed_line(rank, dead.pid, -dead.exitcode), file=sys.stderr)
        return failure.exitcode if 0 < failure.exitcode < 256 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
