"""Opening the shared regtest chain file, for the daemon and for the CLI's ``chain``/``fund`` commands.

Its own small module so that ``lightspeed chain mine`` (run many times by people and tests) imports
the chain and not the daemon, the REST app and the whole node: that import was most of its time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lightspeed.chain.regtest import RegtestChain
from lightspeed.errors import UsageError


def open_chain(path: Path, create: bool = False) -> RegtestChain:
    """The shared regtest chain at ``path``; UsageError (naming --chain) if it cannot be opened."""
    if not create and not path.exists():
        raise UsageError(f"--chain {path}: no chain file there (a daemon creates it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return RegtestChain(path)
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"--chain {path}: {getattr(exc, 'strerror', None) or exc}") from None
