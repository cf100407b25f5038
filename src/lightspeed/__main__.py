"""``python -m lightspeed`` (and the ``lightspeed`` script) runs the ``lightspeed`` command."""

import os
import signal
import sys
from types import FrameType


def _interrupted_while_starting(_signum: int, _frame: FrameType | None) -> None:
    """Ctrl-C before the command is running (imports take a moment on a busy machine): the same
    one line and exit 130 as later (:class:`lightspeed.cli.common.LightspeedGroup`), no traceback."""
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def run() -> None:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    from lightspeed.cli.main import main

    main()


if __name__ == "__main__":
    run()
